// Why has this twin not converged? (GET /v1/twins/{id}/explain). The twin's actor answers from
// the twin's own state — its delta, reconcile progress and each reported leaf's time, its
// connection and liveness, its commands and the last message refused from its device — in plain
// words, with the facts behind each reason for a program (or the console) to use:
//
//   {"converged": false,
//    "reasons": [{"code": "offline", "text": "offline since 2026-12-05 12:01:07 UTC; the delta
//                 waits for it to reconnect", "since": 1764936067000}, ...]}
//
// The codes, in the order they are listed:
//   device_error     the last message the gateway refused from the device, and why (kept while
//                    no report was accepted after it)
//   offline          the device is offline (or never connected) and a delta waits for it
//   not_applied      the device reported a delta field after the delta was sent, with another
//                    value: it received the delta and did not apply it
//   retrying         the delta was sent and is sent again until it converges or attempts run out
//   failed           reconciliation gave up after the maximum attempts
//   stale            nothing heard from the device for longer than its staleness window
//   command_pending  commands wait to be delivered or for the device's result
// `converged` is whether desired and reported agree (no delta); a converged twin may still list
// reasons (a stale device, a pending command, a refused message).
#pragma once

#include "twins/twin.h"
#include "twins/twin_logic.h"

namespace doppel::twins {

json explain(const Twin& twin, const TwinLogic& logic, Millis now);

// "2026-12-05 12:01:07 UTC"
std::string format_utc(Millis at);

}  // namespace doppel::twins
