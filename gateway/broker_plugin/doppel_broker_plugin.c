/* doppel_broker_plugin: a Mosquitto 2.0 plugin that the embedded broker loads, so that doppeld
 * learns from the broker what only the broker knows.
 *
 * - Presence: when a client other than doppeld disconnects (cleanly, by timeout, or because it
 *   was kicked), the plugin publishes "offline" on $doppel/presence/{client id}. Devices that send
 *   no last will (AWS IoT firmware: AWS ignores wills on its topics) still go offline in their
 *   twin, and Doppel's own devices that die without one too. (Mosquitto 2.0 has no connect event
 *   for plugins: doppeld learns of connections from the broker's notices on $SYS/broker/log/N.)
 * - Kicks: doppeld publishes "kick {username}" on $CONTROL/doppel/v1 after revoking a device's
 *   credentials or certificate; the plugin disconnects that device's connection at once (the
 *   revocation already keeps it from connecting again). Only the user named by
 *   plugin_opt_gateway_user may send it; without that option control messages are refused.
 * - Relay: doppeld's publishing connection sends many QoS 0 messages as one PUBLISH on
 *   $CONTROL/doppel/relay/v1, and the plugin publishes each of them inside the broker. Mosquitto
 *   2.0 reads every incoming packet with three or four read() calls, so an answer per device
 *   update (the AWS dialect's update/accepted) cost the broker as much CPU as a tenth of a whole
 *   update; relayed, the reads are per batch. Records, back to back: topic length (2 bytes, big
 *   endian), topic, payload length (4 bytes, big endian), payload. Only the user named by
 *   plugin_opt_relay_user may relay (anyone else's relay is refused, and the broker disconnects
 *   them); a malformed record, or a topic with a wildcard or under $ other than $aws/, ends the
 *   batch (those before it are published). The messages are delivered as any other, each
 *   subscriber's read ACL applies; the relay user's write ACL does not.
 *
 * Built against Debian's mosquitto-dev; loaded with `plugin <path>` in the broker's config. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static mosquitto_plugin_id_t *plugin_id = NULL;
static char gateway_user[256] = "";
static char relay_user[256] = "";

static const char kControlTopic[] = "$CONTROL/doppel/v1";
static const char kRelayTopic[] = "$CONTROL/doppel/relay/v1";
static const char kPresencePrefix[] = "$doppel/presence/";

static int on_disconnect(int event, void *event_data, void *userdata) {
  (void)event;
  (void)userdata;
  const struct mosquitto_evt_disconnect *ed = event_data;
  const char *id = mosquitto_client_id(ed->client);
  const char *user = mosquitto_client_username(ed->client);
  if (id == NULL || id[0] == '\0') return MOSQ_ERR_SUCCESS;
  if (gateway_user[0] != '\0' && user != NULL && strcmp(user, gateway_user) == 0) {
    return MOSQ_ERR_SUCCESS; /* doppeld itself */
  }
  char topic[512];
  const int n = snprintf(topic, sizeof topic, "%s%s", kPresencePrefix, id);
  if (n <= 0 || (size_t)n >= sizeof topic || strpbrk(id, "+#/") != NULL) return MOSQ_ERR_SUCCESS;
  static const char kOffline[] = "offline";
  mosquitto_broker_publish_copy(NULL, topic, (int)(sizeof kOffline - 1), kOffline, 1, false, NULL);
  return MOSQ_ERR_SUCCESS;
}

/* Whether `client` logged in as `user` (never, when no such user was configured). */
static int logged_in_as(const struct mosquitto *client, const char *user) {
  const char *name = mosquitto_client_username(client);
  return user[0] != '\0' && name != NULL && strcmp(name, user) == 0;
}

static int on_control(int event, void *event_data, void *userdata) {
  (void)event;
  (void)userdata;
  struct mosquitto_evt_control *ed = event_data;
  if (!logged_in_as(ed->client, gateway_user)) return MOSQ_ERR_ACL_DENIED;
  char command[300];
  if (ed->payloadlen == 0 || ed->payloadlen >= sizeof command) return MOSQ_ERR_INVAL;
  memcpy(command, ed->payload, ed->payloadlen);
  command[ed->payloadlen] = '\0';
  if (strncmp(command, "kick ", 5) == 0 && command[5] != '\0') {
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "doppel: disconnecting %s (credentials revoked)",
                         command + 5);
    mosquitto_kick_client_by_username(command + 5, false);
    return MOSQ_ERR_SUCCESS;
  }
  return MOSQ_ERR_INVAL;
}

static int on_relay(int event, void *event_data, void *userdata) {
  (void)event;
  (void)userdata;
  struct mosquitto_evt_control *ed = event_data;
  if (!logged_in_as(ed->client, relay_user)) return MOSQ_ERR_ACL_DENIED;
  const unsigned char *p = ed->payload;
  const unsigned char *end = p + ed->payloadlen;
  static char topic[65536]; /* the broker calls plugins from its one thread */
  while (end - p >= 2) {
    const size_t topic_len = ((size_t)p[0] << 8) | p[1];
    p += 2;
    if (topic_len == 0 || (size_t)(end - p) < topic_len + 4) return MOSQ_ERR_INVAL;
    memcpy(topic, p, topic_len);
    topic[topic_len] = '\0';
    p += topic_len;
    const uint32_t payload_len = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                                 ((uint32_t)p[2] << 8) | (uint32_t)p[3];
    p += 4;
    if ((size_t)(end - p) < payload_len) return MOSQ_ERR_INVAL;
    /* A topic a client could publish to (no wildcards, no NUL), and of the $ topics only AWS
     * IoT's: nothing into $CONTROL, $SYS or doppeld's own $doppel/presence. */
    if (strlen(topic) != topic_len || strpbrk(topic, "+#") != NULL ||
        (topic[0] == '$' && strncmp(topic, "$aws/", 5) != 0)) {
      return MOSQ_ERR_INVAL;
    }
    mosquitto_broker_publish_copy(NULL, topic, (int)payload_len, p, 0, false, NULL);
    p += payload_len;
  }
  return p == end ? MOSQ_ERR_SUCCESS : MOSQ_ERR_INVAL;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions) {
  for (int i = 0; i < supported_version_count; ++i) {
    if (supported_versions[i] == 5) return 5;
  }
  return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                          struct mosquitto_opt *options, int option_count) {
  (void)userdata;
  plugin_id = identifier;
  for (int i = 0; i < option_count; ++i) {
    if (strcmp(options[i].key, "gateway_user") == 0 && options[i].value != NULL) {
      snprintf(gateway_user, sizeof gateway_user, "%s", options[i].value);
    } else if (strcmp(options[i].key, "relay_user") == 0 && options[i].value != NULL) {
      snprintf(relay_user, sizeof relay_user, "%s", options[i].value);
    }
  }
  int rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL);
  if (rc != MOSQ_ERR_SUCCESS) return rc;
  rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_CONTROL, on_control, kControlTopic, NULL);
  if (rc != MOSQ_ERR_SUCCESS) return rc;
  return mosquitto_callback_register(plugin_id, MOSQ_EVT_CONTROL, on_relay, kRelayTopic, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count) {
  (void)userdata;
  (void)options;
  (void)option_count;
  mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
  mosquitto_callback_unregister(plugin_id, MOSQ_EVT_CONTROL, on_control, kControlTopic);
  mosquitto_callback_unregister(plugin_id, MOSQ_EVT_CONTROL, on_relay, kRelayTopic);
  return MOSQ_ERR_SUCCESS;
}
