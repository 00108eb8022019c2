#include "mqtt/dynsec_client.h"

#include "twins/log.h"

namespace doppel::mqtt {

DynsecClient::DynsecClient(ClientOptions options)
    : options_(std::move(options)), client_(options_) {
  client_.on_message([this](IncomingMessage&& m) { on_message(std::move(m)); });
  client_.on_connected([this] {
    // A reconnect with a clean session has no subscription: answers would never arrive.
    (void)client_.subscribe({std::string(kResponseTopic)}, 1, std::chrono::milliseconds(0));
  });
}

DynsecClient::~DynsecClient() { stop(); }

Status DynsecClient::start(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  Status connected = client_.connect(timeout);
  if (!connected) {
    return Status(StatusCode::kUnavailable, "cannot reach the broker at " + options_.uri + " as '" +
                                                options_.username + "': " + connected.message());
  }
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  Status subscribed = client_.subscribe({std::string(kResponseTopic)}, 1,
                                        std::max(left, std::chrono::milliseconds(1000)));
  if (!subscribed) {
    return Status(StatusCode::kUnavailable,
                  "the broker does not let '" + options_.username + "' read " +
                      std::string(kResponseTopic) + " (" + subscribed.message() +
                      "): give it the dynamic-security plugin's admin role");
  }
  return Status::ok();
}

void DynsecClient::stop() { (void)client_.disconnect(std::chrono::milliseconds(500)); }

Result<std::vector<DynsecClient::Answer>> DynsecClient::call(nlohmann::json commands,
                                                             std::chrono::milliseconds timeout) {
  if (!commands.is_array() || commands.empty()) {
    return Status(StatusCode::kInvalidArgument, "dynamic-security: no commands");
  }
  std::string correlation;
  {
    std::lock_guard lock(mu_);
    correlation = options_.client_id + ":" + std::to_string(++next_);
    waiting_.insert(correlation);
  }
  // The plugin echoes each command's correlation data in its answer; the first one names the
  // request (the answers to one request come in one message).
  for (size_t i = 0; i < commands.size(); ++i) {
    commands[i]["correlationData"] = i == 0 ? correlation : correlation + "." + std::to_string(i);
  }
  const nlohmann::json request = {{"commands", std::move(commands)}};
  const Status sent = client_.publish(std::string(kCommandTopic), request.dump(), 1);
  std::unique_lock lock(mu_);
  if (!sent) {
    waiting_.erase(correlation);
    return sent;
  }
  const bool got =
      answered_.wait_for(lock, timeout, [&] { return answers_.contains(correlation); });
  waiting_.erase(correlation);
  if (!got) {
    return Status(StatusCode::kUnavailable,
                  "the broker's dynamic-security plugin did not answer within " +
                      std::to_string(timeout.count()) + " ms (is it loaded, and may '" +
                      options_.username + "' use it?)");
  }
  auto node = answers_.extract(correlation);
  return std::move(node.mapped());
}

void DynsecClient::on_message(IncomingMessage&& msg) {
  if (msg.topic != kResponseTopic) return;
  nlohmann::json body = nlohmann::json::parse(msg.payload, nullptr, false);
  if (!body.is_object() || !body.contains("responses") || !body["responses"].is_array() ||
      body["responses"].empty()) {
    return;
  }
  const auto& first = body["responses"][0];
  if (!first.is_object() || !first.contains("correlationData") ||
      !first["correlationData"].is_string()) {
    return;  // an answer to somebody else's request
  }
  const std::string correlation = first["correlationData"].get<std::string>();
  std::vector<Answer> answers;
  for (const auto& r : body["responses"]) {
    if (!r.is_object()) continue;
    Answer a;
    a.command = r.value("command", "");
    a.error = r.contains("error") && r["error"].is_string() ? r["error"].get<std::string>() : "";
    if (r.contains("data")) a.data = r["data"];
    answers.push_back(std::move(a));
  }
  std::lock_guard lock(mu_);
  if (!waiting_.contains(correlation)) return;  // another node's, or given up on
  answers_[correlation] = std::move(answers);
  answered_.notify_all();
}

}  // namespace doppel::mqtt
