// What TwinLogic's rule files (twin_logic.cc, liveness.cc, reconcile.cc, command_queue.cc,
// job_runs.cc) share beyond twin_logic.h. Internal to twins/.
#pragma once

#include "twins/twin_logic.h"

namespace doppel::twins::detail {

// Records that `c` changed in this step (it is written with the twin).
void mark(Outcome& out, const Command& c);

}  // namespace doppel::twins::detail
