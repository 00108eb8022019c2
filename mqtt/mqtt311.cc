#include "mqtt/mqtt311.h"

#include <sys/socket.h>

#include <cerrno>

namespace doppel::mqtt::mqtt311 {
namespace {

void put_u16(std::string& out, size_t n) {
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  out.push_back(static_cast<char>(n & 0xff));
}

void put_string(std::string& out, std::string_view s) {
  put_u16(out, s.size());
  out.append(s);
}

// The variable-length "remaining length" (§2.2.3).
void put_length(std::string& out, size_t n) {
  do {
    uint8_t byte = n % 128;
    n /= 128;
    if (n > 0) byte |= 0x80;
    out.push_back(static_cast<char>(byte));
  } while (n > 0);
}

}  // namespace

void append_publish(std::string& out, std::string_view topic, std::string_view payload, int qos,
                    uint16_t packet_id) {
  out.push_back(static_cast<char>(qos > 0 ? 0x32 : 0x30));  // not retained, not a duplicate
  put_length(out, 2 + topic.size() + (qos > 0 ? 2 : 0) + payload.size());
  put_string(out, topic);
  if (qos > 0) put_u16(out, packet_id);
  out.append(payload);
}

std::string connect_packet(std::string_view client_id, std::string_view username,
                           std::string_view password, uint16_t keepalive_s) {
  std::string body;
  put_string(body, "MQTT");
  body.push_back(4);     // protocol level: 3.1.1
  uint8_t flags = 0x02;  // clean session
  if (!username.empty()) flags |= 0x80;
  if (!password.empty()) flags |= 0x40;
  body.push_back(static_cast<char>(flags));
  put_u16(body, keepalive_s);
  put_string(body, client_id);
  if (!username.empty()) put_string(body, username);
  if (!password.empty()) put_string(body, password);
  std::string out(1, static_cast<char>(0x10));
  put_length(out, body.size());
  return out + body;
}

bool connack_accepted(const unsigned char* connack, int* code) {
  if (connack[0] != 0x20 || connack[1] != 2) {
    *code = -1;
    return false;
  }
  *code = connack[3];
  return connack[3] == 0;
}

size_t next_packet(std::string_view bytes, int* type, std::string_view* body) {
  if (bytes.size() < 2) return 0;
  size_t length = 0;
  size_t at = 1;
  for (size_t shift = 0;; shift += 7) {
    if (at == 5) return kMalformed;
    if (at == bytes.size()) return 0;
    const auto byte = static_cast<unsigned char>(bytes[at++]);
    length |= static_cast<size_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) break;
  }
  if (bytes.size() - at < length) return 0;
  *type = static_cast<unsigned char>(bytes[0]) >> 4;
  *body = bytes.substr(at, length);
  return at + length;
}

int puback_id(std::string_view body) {
  if (body.size() < 2) return -1;
  return (static_cast<unsigned char>(body[0]) << 8) | static_cast<unsigned char>(body[1]);
}

bool write_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool read_exact(int fd, char* data, size_t n) {
  while (n > 0) {
    const ssize_t r = ::recv(fd, data, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    data += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

}  // namespace doppel::mqtt::mqtt311
