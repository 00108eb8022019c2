// BrokerAccounts: device credentials kept by an external broker's dynamic-security plugin
// (Mosquitto 2's $CONTROL/dynamic-security/v1), the DeviceCredentials port's implementation for
// `--device-auth` with `--broker`, and so for a cluster, whose nodes share one broker. Whichever
// node answers a request changes the broker's accounts, and every node's devices see it at once.
//
// Each device gets a client (username = client id = its id, the password issued here) and a
// role of its own, "doppel-device:{id}", allowing its twin's topics only: {prefix}/{id}/# and
// $aws/things/{id}/#. (Mosquitto 2.0's plugin has no %u patterns, hence a role per device.) The
// password is sent once to the broker, which keeps only its salted hash; doppeld keeps nothing.
// Revoking deletes the client, which the plugin also disconnects.
//
// doppeld's own account must hold the plugin's admin role (`mosquitto_ctrl dynsec init`);
// start() adds a role "doppel-gateway" to it for the device topics it subscribes and publishes.
//
// Thread-safety: every member may be called from any thread.
#pragma once

#include <chrono>
#include <string>

#include "gateway/device_credentials.h"
#include "mqtt/dynsec_client.h"

namespace doppel::gateway {

struct BrokerAccountsOptions {
  std::string prefix = "twins";               // topic prefix
  std::string gateway_user;                   // doppeld's account on the broker
  std::chrono::milliseconds timeout{10'000};  // for each answer of the plugin
};

class BrokerAccounts final : public DeviceCredentials {
 public:
  BrokerAccounts(BrokerAccountsOptions options, mqtt::DynsecClient& plugin);

  // Gives doppeld's account the role it needs to hear and answer devices (idempotent).
  Status start();

  Status check_device(const std::string& device_id) const override;
  Result<std::string> issue(const std::string& device_id) override;
  Result<Revoked> revoke(const std::string& device_id) override;
  bool has_ca() const override { return false; }
  Result<IssuedCertificate> issue_certificate(const std::string& device_id,
                                              const std::string& csr_pem) override;

  static constexpr std::string_view kGatewayRole = "doppel-gateway";
  static std::string device_role(const std::string& device_id) {
    return "doppel-device:" + device_id;
  }

 private:
  // Sends `commands` and fails on the first answer whose error is not in `tolerated`; waits
  // `timeout` for the answer (0: the options').
  Result<std::vector<mqtt::DynsecClient::Answer>> call(
      nlohmann::json commands, const std::vector<std::string_view>& tolerated = {},
      std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  Result<bool> has_role(const std::string& username, const std::string& role,
                        std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  // Adds `role` to client `username` unless it has it (the plugin answers a second add with
  // "Internal error").
  Status ensure_role(const std::string& username, const std::string& role);

  BrokerAccountsOptions options_;
  mqtt::DynsecClient& plugin_;
};

}  // namespace doppel::gateway
