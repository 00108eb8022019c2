// DynsecClient: commands to Mosquitto's dynamic-security plugin, over a connection of its own.
// The plugin takes a JSON list of commands on $CONTROL/dynamic-security/v1 and publishes the
// answers, one message per request, on $CONTROL/dynamic-security/v1/response — to every
// subscriber, so the nodes of a cluster see each other's answers. Each request's commands carry
// correlation data made of this connection's client id and a sequence number; an answer is
// matched to its request by it and the others are ignored.
//
// The account needs the plugin's admin role (what `mosquitto_ctrl dynsec init` gives its user).
//
// Thread-safety: call() from any thread, concurrently.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "mqtt/client.h"
#include "twins/document.h"
#include "twins/status.h"

namespace doppel::mqtt {

class DynsecClient {
 public:
  static constexpr std::string_view kCommandTopic = "$CONTROL/dynamic-security/v1";
  static constexpr std::string_view kResponseTopic = "$CONTROL/dynamic-security/v1/response";

  // `options.client_id` must be unique among the broker's clients (it prefixes correlations).
  explicit DynsecClient(ClientOptions options);
  ~DynsecClient();
  DynsecClient(const DynsecClient&) = delete;
  DynsecClient& operator=(const DynsecClient&) = delete;

  // Connects (reconnecting by itself afterwards) and subscribes to the answers; kUnavailable
  // when the broker did not accept both within `timeout`.
  Status start(std::chrono::milliseconds timeout);
  void stop();

  // One command's answer: its name, the plugin's error text (empty: it succeeded), and its data
  // (getClient's client, for example; null when none).
  struct Answer {
    std::string command;
    std::string error;
    nlohmann::json data;
  };
  // Sends `commands` (objects with "command" and its fields) in one request and returns their
  // answers in order. kUnavailable when no answer came within `timeout` (the broker is away, or
  // the account may not use the plugin).
  Result<std::vector<Answer>> call(nlohmann::json commands, std::chrono::milliseconds timeout);

 private:
  void on_message(IncomingMessage&& msg);

  ClientOptions options_;
  Client client_;
  std::mutex mu_;
  std::condition_variable answered_;
  uint64_t next_ = 0;
  std::map<std::string, std::vector<Answer>> answers_;  // by correlation, until taken
  std::set<std::string> waiting_;                       // correlations a caller waits for
};

}  // namespace doppel::mqtt
