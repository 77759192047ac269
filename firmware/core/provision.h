/* provision.h - WiFi credentials over the UART at boot: request parser, flash record, text.
 *
 * The exchange is specified in README.md next to this file ("Boot and WiFi provisioning"). Like
 * the relay state machine (relay.h) it is C11 and freestanding, with no heap, clock or I/O.
 */
#ifndef RELAY_PROVISION_H
#define RELAY_PROVISION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What a boot line and a request (and its reply) start with. */
#define RELAY_BOOT_PREFIX "relay boot "
#define RELAY_PROVISION_PREFIX "relay provision "

#define RELAY_SSID_MAX 32
#define RELAY_PSK_MAX 64
/* A provisioned board listens this long after its boot line; an unprovisioned one, forever. */
#define RELAY_PROVISION_LISTEN_MS 250
/* Longest request line: "relay provision ssid=<64 hex> psk=<128 hex>" and its terminator. */
#define RELAY_PROVISION_LINE_MAX 224
/* Boot and reply lines, incl. NUL. */
#define RELAY_PROVISION_TEXT_MAX 128
/* The credential record platforms keep in flash (the sketch: in the EEPROM sector). */
#define RELAY_CRED_RECORD_SIZE 108

typedef struct relay_wifi {
    uint8_t ssid_len;                /* 1 ..= RELAY_SSID_MAX */
    uint8_t psk_len;                 /* 0 (open network) or 8 ..= RELAY_PSK_MAX */
    char ssid[RELAY_SSID_MAX + 1];   /* NUL-terminated for the platform's WiFi API */
    char psk[RELAY_PSK_MAX + 1];
} relay_wifi_t;

/* A request line being received, byte by byte. Zero-initialise it. */
typedef struct relay_provision {
    uint16_t len;
    uint8_t overlong;
    uint8_t line[RELAY_PROVISION_LINE_MAX];
} relay_provision_t;

enum relay_provision_result {
    RELAY_PROV_NONE = 1, /* no complete request yet (other lines are ignored) */
    RELAY_PROV_OK = 0,   /* *out holds the new credentials */
    RELAY_PROV_E_FORMAT = -1,
    RELAY_PROV_E_SSID = -2,
    RELAY_PROV_E_PSK = -3,
    RELAY_PROV_E_LONG = -4,
    RELAY_PROV_E_SSID_NUL = -5, /* the platform's WiFi API would cut the ssid at the NUL */
};

/* Feeds one UART byte; at the end of a request line returns RELAY_PROV_OK or an error. */
int relay_provision_input(relay_provision_t *p, uint8_t byte, relay_wifi_t *out);
const char *relay_provision_strerror(int result);
/* FNV-1a over the credentials: what the boot line and replies show instead of them. */
uint32_t relay_wifi_digest(const relay_wifi_t *w);
/* The flash record: encode writes RELAY_CRED_RECORD_SIZE bytes (cap must hold them) and
 * returns that size, or 0; decode is false for erased, foreign or corrupt records. */
size_t relay_wifi_encode(const relay_wifi_t *w, uint8_t *rec, size_t cap);
bool relay_wifi_decode(const uint8_t *rec, size_t len, relay_wifi_t *out);
/* The formatters behave like snprintf, as relay.h's do.
 * "relay boot version=.. build=.. wifi=<digest>|none listen_ms=..", stored may be NULL. */
size_t relay_format_boot(const relay_wifi_t *stored, const char *build_id, char *buf,
                         size_t cap);
/* "relay provision ok wifi=<digest>" or "relay provision error <reason>". */
size_t relay_format_provision_reply(int result, const relay_wifi_t *w, char *buf, size_t cap);
/* The request a host sends: "relay provision ssid=<hex> psk=<hex>". */
size_t relay_format_provision_request(const relay_wifi_t *w, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif /* RELAY_PROVISION_H */
