#include "gateway/broker_accounts.h"

#include <algorithm>

#include "gateway/device_auth.h"
#include "twins/log.h"

namespace doppel::gateway {
namespace {

constexpr std::string_view kRoleExists = "Role already exists";
constexpr std::string_view kClientExists = "Client already exists";
constexpr std::string_view kClientNotFound = "Client not found";
constexpr std::string_view kRoleNotFound = "Role not found";
constexpr std::string_view kAclExists = "ACL with this topic already exists";

nlohmann::json acl(std::string_view type, const std::string& topic) {
  return {{"acltype", type}, {"topic", topic}, {"allow", true}};
}

// Publish and subscribe to each of `topics` (filters ending in /#); with `receive`, also receive
// there whatever the plugin's default. A device's role leaves receiving to the default (allowed
// by `mosquitto_ctrl dynsec init`): the plugin rewrites its whole file after every change, so
// each ACL more in every device's role makes provisioning slower.
nlohmann::json acls_for(const std::vector<std::string>& topics, bool receive) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& t : topics) {
    out.push_back(acl("publishClientSend", t));
    if (receive) out.push_back(acl("publishClientReceive", t));
    out.push_back(acl("subscribePattern", t));
  }
  return out;
}

}  // namespace

BrokerAccounts::BrokerAccounts(BrokerAccountsOptions options, mqtt::DynsecClient& plugin)
    : options_(std::move(options)), plugin_(plugin) {}

Result<std::vector<mqtt::DynsecClient::Answer>> BrokerAccounts::call(
    nlohmann::json commands, const std::vector<std::string_view>& tolerated,
    std::chrono::milliseconds timeout) {
  const size_t sent = commands.size();
  auto answers =
      plugin_.call(std::move(commands), timeout.count() > 0 ? timeout : options_.timeout);
  if (!answers) return answers;
  if (answers->size() != sent) {
    return Status(StatusCode::kUnavailable, "the broker's dynamic-security plugin answered " +
                                                std::to_string(answers->size()) + " of " +
                                                std::to_string(sent) + " commands");
  }
  for (const auto& a : *answers) {
    if (a.error.empty()) continue;
    if (std::find(tolerated.begin(), tolerated.end(), a.error) != tolerated.end()) continue;
    return Status(StatusCode::kUnavailable,
                  "the broker's dynamic-security plugin refused " + a.command + ": " + a.error);
  }
  return answers;
}

Result<bool> BrokerAccounts::has_role(const std::string& username, const std::string& role,
                                      std::chrono::milliseconds timeout) {
  auto got = call({{{"command", "getClient"}, {"username", username}}}, {}, timeout);
  if (!got) return got.status();
  const nlohmann::json& data = (*got)[0].data;
  if (data.contains("client") && data["client"].contains("roles")) {
    for (const auto& r : data["client"]["roles"]) {
      if (r.value("rolename", "") == role) return true;
    }
  }
  return false;
}

Status BrokerAccounts::ensure_role(const std::string& username, const std::string& role) {
  auto has = has_role(username, role);
  if (!has || *has) return has.status();
  const bool self = username == options_.gateway_user;
  auto added = call({{{"command", "addClientRole"}, {"username", username}, {"rolename", role}}},
                    {}, self ? std::chrono::milliseconds(2000) : std::chrono::milliseconds(0));
  if (added) return Status::ok();
  if (!self) return added.status();
  // The plugin disconnects a client whose roles change, so that its new rights apply: for
  // doppeld's own account that is this very connection, and the answer is lost with it. After
  // the reconnect, ask again whether it took.
  // (An answer published before the new connection's subscription is lost too: short waits.)
  for (int attempt = 0; attempt < 10; ++attempt) {
    has = has_role(username, role, std::chrono::milliseconds(1500));
    if (has && *has) return Status::ok();
  }
  return Status(StatusCode::kUnavailable,
                "could not give '" + username + "' the role '" + role +
                    "' in the broker's dynamic-security plugin: " + added.status().message());
}

Status BrokerAccounts::start() {
  // Everything doppeld subscribes to and publishes on; $SYS/broker/# for the drop counter.
  const std::string role(kGatewayRole);
  nlohmann::json acls = acls_for({options_.prefix + "/#", "$aws/things/#"}, true);
  acls.push_back(acl("subscribePattern", "$SYS/broker/#"));
  acls.push_back(acl("publishClientReceive", "$SYS/broker/#"));
  auto created =
      call({{{"command", "createRole"}, {"rolename", role}, {"acls", acls}}}, {kRoleExists});
  if (!created) return created.status();
  if (!(*created)[0].error.empty()) {
    // It exists (an earlier start, or another node): add what may be missing, e.g. after the
    // topic prefix changed.
    nlohmann::json adds = nlohmann::json::array();
    for (auto& a : acls) {
      a["command"] = "addRoleACL";
      a["rolename"] = role;
      adds.push_back(a);
    }
    if (auto added = call(std::move(adds), {kAclExists}); !added) return added.status();
  }
  if (Status s = ensure_role(options_.gateway_user, role); !s) return s;
  log_info("device credentials are kept by the broker's dynamic-security plugin; role '" + role +
           "' given to '" + options_.gateway_user + "'");
  return Status::ok();
}

Status BrokerAccounts::check_device(const std::string& device_id) const {
  if (device_id == options_.gateway_user) {
    return Status(StatusCode::kInvalidId, "'" + device_id +
                                              "' is the gateway's own broker account; a device "
                                              "with this id cannot have credentials");
  }
  if (device_id.find_first_of("+#/") != std::string::npos) {
    return Status(StatusCode::kInvalidId,
                  "device id '" + device_id +
                      "' contains an MQTT wildcard or '/', which cannot name its topics in the "
                      "broker's ACL; give devices that need credentials other ids");
  }
  return Status::ok();
}

Result<std::string> BrokerAccounts::issue(const std::string& device_id) {
  if (Status s = check_device(device_id); !s) return s;
  const std::string role = device_role(device_id);
  const std::string password = random_secret(18);
  auto created = call({{{"command", "createRole"},
                        {"rolename", role},
                        {"acls", acls_for({options_.prefix + "/" + device_id + "/#",
                                           "$aws/things/" + device_id + "/#"},
                                          false)}},
                       {{"command", "createClient"},
                        {"username", device_id},
                        {"password", password},
                        {"clientid", device_id},
                        {"roles", {{{"rolename", role}}}}}},
                      {kRoleExists, kClientExists});
  if (!created) return created.status();
  if ((*created)[1].error == kClientExists) {
    // A new password replaces the old one (the device's current connection stays).
    auto set =
        call({{{"command", "setClientPassword"}, {"username", device_id}, {"password", password}}});
    if (!set) return set.status();
    if (Status s = ensure_role(device_id, role); !s) return s;
  }
  log_info("device credentials issued for '" + device_id + "' (broker account)");
  return password;
}

Result<DeviceCredentials::Revoked> BrokerAccounts::revoke(const std::string& device_id) {
  Revoked out;
  if (device_id == options_.gateway_user) return out;  // never doppeld's own account
  auto deleted = call({{{"command", "deleteClient"}, {"username", device_id}},
                       {{"command", "deleteRole"}, {"rolename", device_role(device_id)}}},
                      {kClientNotFound, kRoleNotFound});
  if (!deleted) return deleted.status();
  out.password = (*deleted)[0].error.empty();
  if (out.password) log_info("device credentials revoked for '" + device_id + "' (broker account)");
  return out;
}

Result<IssuedCertificate> BrokerAccounts::issue_certificate(const std::string&,
                                                            const std::string&) {
  return Status(StatusCode::kInvalidArgument,
                "device certificates are issued only with the embedded broker (--device-auth "
                "x509); an external broker's accounts are passwords");
}

}  // namespace doppel::gateway
