// A twin driven by its own rules (TwinLogic) at explicit times — a fake clock in all but name —
// for the tests of the rules and of what reads a twin's state (explain.h).
#pragma once

#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <utility>

#include "twins/twin_logic.h"

namespace doppel::testing {

struct TwinSteps {
  TwinSteps(twins::Policy policy, const std::string& id, twins::Millis start)
      : logic(std::move(policy)), now(start) {
    twins::Outcome out;
    twin = logic.create(id, now, out);
  }

  twins::Outcome report(const char* state) {
    twins::Outcome out;
    REQUIRE(logic.on_reported(
        twin, twins::ReportedMessage{twins::json::parse(state), "", {}, {}, {}}, now, out));
    return out;
  }
  // The device's birth (online, optionally declaring its interval).
  twins::Outcome birth(std::optional<double> interval = std::nullopt) {
    twins::Outcome out;
    logic.on_status(twin, twins::StatusMessage{true, interval, std::nullopt},
                    twins::Encoding::kJson, now, out);
    return out;
  }
  twins::Outcome offline() {
    twins::Outcome out;
    logic.on_status(twin, twins::StatusMessage{false, std::nullopt, std::nullopt},
                    twins::Encoding::kJson, now, out);
    return out;
  }
  twins::Outcome desire(const char* patch, std::optional<uint64_t> if_match = std::nullopt) {
    twins::Outcome out;
    REQUIRE(logic.update_desired(
        twin, twins::UpdateDesired{twins::json::parse(patch), false, if_match}, now, out));
    return out;
  }
  twins::Outcome alarm() {
    twins::Outcome out;
    logic.on_alarm(twin, now, out);
    return out;
  }
  twins::json doc() const { return twins::twin_document(twin, logic.stale_after_ms(twin)); }

  twins::TwinLogic logic;
  twins::Millis now;
  twins::Twin twin;
};

}  // namespace doppel::testing
