// The few MQTT 3.1.1 packets Doppel writes itself, over a plain socket, where a library's
// per-message cost is what is being avoided: the gateway's QoS 0 answers in batches
// (batch_publisher.h) and the benchmark's load generator (simulator/bench/raw_publisher.h).
// Pure encoders and two blocking socket helpers; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace doppel::mqtt::mqtt311 {

// PUBLISH (§3.3) at QoS 0, or at QoS 1 with `packet_id`, appended to `out`.
void append_publish(std::string& out, std::string_view topic, std::string_view payload, int qos = 0,
                    uint16_t packet_id = 0);
// CONNECT (§3.1) with a clean session; username and password when not empty.
std::string connect_packet(std::string_view client_id, std::string_view username,
                           std::string_view password, uint16_t keepalive_s);
// Whether `connack` (4 bytes) is a CONNACK that accepted the connection; its return code in
// `code` (0: accepted; 4: bad username or password; 5: not authorized).
bool connack_accepted(const unsigned char* connack, int* code);

// The first whole packet at the start of `bytes` (what a broker sends: PUBACK, PINGRESP, ...):
// its packet type (the fixed header's high nibble) in `type`, its variable header and payload in
// `body`, and the bytes it takes up; 0 while it is incomplete; kMalformed when the remaining
// length is not valid (§2.2.3: at most four bytes).
inline constexpr size_t kMalformed = static_cast<size_t>(-1);
size_t next_packet(std::string_view bytes, int* type, std::string_view* body);
// The packet id of a PUBACK's body; -1 when it is too short.
int puback_id(std::string_view body);

// Writes all of `data` (send() with MSG_NOSIGNAL, EINTR retried); false when the socket failed.
bool write_all(int fd, const char* data, size_t n);
// Reads exactly `n` bytes; false at end of stream or on an error.
bool read_exact(int fd, char* data, size_t n);

}  // namespace doppel::mqtt::mqtt311
