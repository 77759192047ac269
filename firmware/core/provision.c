/* provision.c - WiFi provisioning: the request parser, the flash record and their lines. */
#include "provision.h"
#include "relay.h" /* RELAY_VERSION, for the boot line */
#include "relay_internal.h"

static const char PROV_PREFIX[] = RELAY_PROVISION_PREFIX;
#define PROV_PREFIX_LEN (sizeof PROV_PREFIX - 1)
static const char HEX[] = "0123456789abcdef";
static const uint8_t CRED_MAGIC[4] = {'R', 'L', 'W', '1'};

_Static_assert(RELAY_PROVISION_LINE_MAX >=
                   PROV_PREFIX_LEN + 5 + 2 * RELAY_SSID_MAX + 5 + 2 * RELAY_PSK_MAX + 2,
               "a request with the longest ssid and password must fit");
_Static_assert(RELAY_CRED_RECORD_SIZE == 8 + RELAY_SSID_MAX + RELAY_PSK_MAX + 4,
               "record: magic, lengths, ssid, password, digest");

static int hex_value(uint8_t c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static bool starts_with(const uint8_t *s, size_t len, const char *prefix, size_t n) {
    if (len < n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] != (uint8_t)prefix[i]) {
            return false;
        }
    }
    return true;
}

/* Decodes `key=<hex>` at *pos into out (at most max bytes); returns the byte count or -1. */
static int take_hex(const uint8_t *s, size_t len, size_t *pos, const char *key, size_t key_len,
                    char *out, size_t max) {
    if (!starts_with(s + *pos, len - *pos, key, key_len)) {
        return -1;
    }
    size_t i = *pos + key_len, n = 0;
    while (i + 1 < len && hex_value(s[i]) >= 0 && hex_value(s[i + 1]) >= 0) {
        if (n == max) {
            return (int)max + 1; /* too long: the caller names the field */
        }
        out[n++] = (char)(hex_value(s[i]) << 4 | hex_value(s[i + 1]));
        i += 2;
    }
    out[n] = '\0';
    *pos = i;
    return (int)n;
}

static bool psk_valid(const char *psk, size_t n) {
    if (n == 0) {
        return true; /* open network */
    }
    if (n == RELAY_PSK_MAX) { /* a raw 256-bit key, in hex */
        for (size_t i = 0; i < n; i++) {
            if (hex_value((uint8_t)psk[i]) < 0) {
                return false;
            }
        }
        return true;
    }
    if (n < 8) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (psk[i] < ' ' || psk[i] > '~') {
            return false;
        }
    }
    return true;
}

static int provision_parse(const uint8_t *s, size_t len, relay_wifi_t *out) {
    relay_wifi_t w;
    memset(&w, 0, sizeof w);
    size_t pos = PROV_PREFIX_LEN;
    int n = take_hex(s, len, &pos, "ssid=", 5, w.ssid, RELAY_SSID_MAX);
    if (n < 0) {
        return RELAY_PROV_E_FORMAT;
    }
    if (n == 0 || n > RELAY_SSID_MAX) {
        return RELAY_PROV_E_SSID;
    }
    for (int i = 0; i < n; i++) {
        if (w.ssid[i] == '\0') {
            return RELAY_PROV_E_SSID_NUL;
        }
    }
    w.ssid_len = (uint8_t)n;
    n = take_hex(s, len, &pos, " psk=", 5, w.psk, RELAY_PSK_MAX);
    if (n < 0 || pos != len) {
        return RELAY_PROV_E_FORMAT;
    }
    if (n > RELAY_PSK_MAX || !psk_valid(w.psk, (size_t)n)) {
        return RELAY_PROV_E_PSK;
    }
    w.psk_len = (uint8_t)n;
    *out = w;
    return RELAY_PROV_OK;
}

int relay_provision_input(relay_provision_t *p, uint8_t byte, relay_wifi_t *out) {
    if (byte != '\n') {
        if (p->len < RELAY_PROVISION_LINE_MAX) {
            p->line[p->len++] = byte;
        } else {
            p->overlong = 1;
        }
        return RELAY_PROV_NONE;
    }
    size_t len = p->len;
    bool overlong = p->overlong != 0;
    p->len = 0;
    p->overlong = 0;
    if (len > 0 && p->line[len - 1] == '\r') {
        len--;
    }
    if (!starts_with(p->line, len, PROV_PREFIX, PROV_PREFIX_LEN)) {
        return RELAY_PROV_NONE;
    }
    return overlong ? RELAY_PROV_E_LONG : provision_parse(p->line, len, out);
}

const char *relay_provision_strerror(int result) {
    switch (result) {
    case RELAY_PROV_OK:
        return "ok";
    case RELAY_PROV_E_FORMAT:
        return "expected `relay provision ssid=<hex> psk=<hex>`";
    case RELAY_PROV_E_SSID:
        return "the ssid must be 1 to 32 bytes";
    case RELAY_PROV_E_PSK:
        return "the password must be empty (open network), 8 to 63 printable characters, "
               "or 64 hex digits";
    case RELAY_PROV_E_LONG:
        return "request too long";
    case RELAY_PROV_E_SSID_NUL:
        return "the ssid must not contain a NUL byte";
    default:
        return "no request";
    }
}

static uint32_t fnv1a(uint32_t h, const uint8_t *data, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= data[i];
        h *= 16777619u;
    }
    return h;
}

uint32_t relay_wifi_digest(const relay_wifi_t *w) {
    uint32_t h = fnv1a(2166136261u, &w->ssid_len, 1);
    h = fnv1a(h, (const uint8_t *)w->ssid, w->ssid_len);
    h = fnv1a(h, &w->psk_len, 1);
    return fnv1a(h, (const uint8_t *)w->psk, w->psk_len);
}

static void put_u32(uint8_t *at, uint32_t v) {
    for (int i = 0; i < 4; i++) {
        at[i] = (uint8_t)(v >> (8 * i));
    }
}

size_t relay_wifi_encode(const relay_wifi_t *w, uint8_t *rec, size_t cap) {
    if (cap < RELAY_CRED_RECORD_SIZE || w->ssid_len > RELAY_SSID_MAX ||
        w->psk_len > RELAY_PSK_MAX) {
        return 0;
    }
    memset(rec, 0, RELAY_CRED_RECORD_SIZE);
    memcpy(rec, CRED_MAGIC, 4);
    rec[4] = w->ssid_len;
    rec[5] = w->psk_len;
    memcpy(rec + 8, w->ssid, w->ssid_len);
    memcpy(rec + 8 + RELAY_SSID_MAX, w->psk, w->psk_len);
    size_t body = RELAY_CRED_RECORD_SIZE - 4;
    put_u32(rec + body, fnv1a(2166136261u, rec, body));
    return RELAY_CRED_RECORD_SIZE;
}

bool relay_wifi_decode(const uint8_t *rec, size_t len, relay_wifi_t *out) {
    size_t body = RELAY_CRED_RECORD_SIZE - 4;
    if (len < RELAY_CRED_RECORD_SIZE || !starts_with(rec, len, (const char *)CRED_MAGIC, 4)) {
        return false;
    }
    uint8_t sum[4];
    put_u32(sum, fnv1a(2166136261u, rec, body));
    if (!starts_with(rec + body, 4, (const char *)sum, 4)) {
        return false;
    }
    relay_wifi_t w;
    memset(&w, 0, sizeof w);
    w.ssid_len = rec[4];
    w.psk_len = rec[5];
    if (w.ssid_len == 0 || w.ssid_len > RELAY_SSID_MAX || w.psk_len > RELAY_PSK_MAX) {
        return false;
    }
    memcpy(w.ssid, rec + 8, w.ssid_len);
    memcpy(w.psk, rec + 8 + RELAY_SSID_MAX, w.psk_len);
    *out = w;
    return true;
}

static void w_hex(writer_t *w, const uint8_t *data, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char pair[2] = {HEX[data[i] >> 4], HEX[data[i] & 15u]};
        w_bytes(w, pair, 2);
    }
}

static void w_digest(writer_t *w, const relay_wifi_t *wifi) {
    uint32_t d = relay_wifi_digest(wifi);
    uint8_t be[4] = {(uint8_t)(d >> 24), (uint8_t)(d >> 16), (uint8_t)(d >> 8), (uint8_t)d};
    w_hex(w, be, 4);
}

size_t relay_format_boot(const relay_wifi_t *stored, const char *build_id, char *buf,
                         size_t cap) {
    writer_t w = {buf, cap, 0};
    w_str(&w, RELAY_BOOT_PREFIX "version=" RELAY_VERSION " build=");
    w_token(&w, build_id, 40);
    w_str(&w, " wifi=");
    if (stored != NULL) {
        w_digest(&w, stored);
    } else {
        w_str(&w, "none");
    }
    w_kv(&w, "listen_ms", stored != NULL ? RELAY_PROVISION_LISTEN_MS : 0);
    w_str(&w, "\r\n");
    return w_finish(&w);
}

size_t relay_format_provision_reply(int result, const relay_wifi_t *wifi, char *buf,
                                    size_t cap) {
    writer_t w = {buf, cap, 0};
    if (result == RELAY_PROV_OK) {
        w_str(&w, RELAY_PROVISION_PREFIX "ok wifi=");
        w_digest(&w, wifi);
    } else {
        w_str(&w, RELAY_PROVISION_PREFIX "error ");
        w_str(&w, relay_provision_strerror(result));
    }
    w_str(&w, "\r\n");
    return w_finish(&w);
}

size_t relay_format_provision_request(const relay_wifi_t *wifi, char *buf, size_t cap) {
    writer_t w = {buf, cap, 0};
    w_str(&w, PROV_PREFIX);
    w_str(&w, "ssid=");
    w_hex(&w, (const uint8_t *)wifi->ssid, wifi->ssid_len <= RELAY_SSID_MAX ? wifi->ssid_len : 0);
    w_str(&w, " psk=");
    w_hex(&w, (const uint8_t *)wifi->psk, wifi->psk_len <= RELAY_PSK_MAX ? wifi->psk_len : 0);
    w_str(&w, "\r\n");
    return w_finish(&w);
}
