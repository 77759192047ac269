/* c_consts.c - build.rs runs this on the host: the headers' constants and layouts, as Rust. */
#include <stddef.h>
#include <stdio.h>

#include "provision.h"
#include "relay.h"

static void layout(const char *name, size_t size, size_t align, const size_t *offsets,
                   size_t n) {
    printf("pub const %s: Layout = Layout { size: %zu, align: %zu, offsets: &[", name, size,
           align);
    for (size_t i = 0; i < n; i++) {
        printf("%s%zu", i > 0 ? ", " : "", offsets[i]);
    }
    printf("] };\n");
}

static void str(const char *name, const char *value) {
    printf("pub const %s: &str = \"", name);
    for (const char *c = value; *c != '\0'; c++) {
        if (*c == '"' || *c == '\\') {
            putchar('\\');
        }
        putchar(*c);
    }
    printf("\";\n");
}

/* LAYOUT(NAME, type, offsetof(type, first), ...): the fields in declaration order. */
#define LAYOUT(name, type, ...)                                                                 \
    do {                                                                                        \
        const size_t offsets[] = {__VA_ARGS__};                                                 \
        layout(#name, sizeof(type), _Alignof(type), offsets, sizeof offsets / sizeof *offsets); \
    } while (0)
#define USIZE(name, value) printf("pub const %s: usize = %zu;\n", #name, (size_t)(value))
#define INT(name, type, value) printf("pub const %s: %s = %ld;\n", #name, type, (long)(value))

int main(void) {
    str("VERSION", RELAY_VERSION);
    USIZE(MAX_CLIENTS_LIMIT, RELAY_MAX_CLIENTS_LIMIT);
    USIZE(MAX_LINE_LIMIT, RELAY_MAX_LINE_LIMIT);
    USIZE(QUEUE_SIZE_LIMIT, RELAY_QUEUE_SIZE_LIMIT);
    USIZE(NOTICE_MAX, RELAY_NOTICE_MAX);
    USIZE(EOL_MAX, RELAY_EOL_MAX);
    USIZE(STATUS_MAX, RELAY_STATUS_MAX);
    INT(MODE_LINE, "u8", RELAY_MODE_LINE);
    INT(MODE_RAW, "u8", RELAY_MODE_RAW);
    INT(EOL_LF, "u8", RELAY_EOL_LF);
    INT(EOL_CR, "u8", RELAY_EOL_CR);
    INT(EOL_CRLF, "u8", RELAY_EOL_CRLF);
    INT(OK, "i32", RELAY_OK);

    str("BANNER_PREFIX", RELAY_BANNER_PREFIX);
    str("STATUS_PREFIX", RELAY_STATUS_PREFIX);
    str("BOOT_PREFIX", RELAY_BOOT_PREFIX);
    str("PROVISION_PREFIX", RELAY_PROVISION_PREFIX);
    USIZE(SSID_MAX, RELAY_SSID_MAX);
    USIZE(PSK_MAX, RELAY_PSK_MAX);
    INT(PROVISION_LISTEN_MS, "u32", RELAY_PROVISION_LISTEN_MS);
    USIZE(PROVISION_LINE_MAX, RELAY_PROVISION_LINE_MAX);
    USIZE(CRED_RECORD_SIZE, RELAY_CRED_RECORD_SIZE);
    INT(PROV_NONE, "i32", RELAY_PROV_NONE);
    INT(PROV_OK, "i32", RELAY_PROV_OK);
    INT(PROV_E_FORMAT, "i32", RELAY_PROV_E_FORMAT);
    INT(PROV_E_SSID, "i32", RELAY_PROV_E_SSID);
    INT(PROV_E_PSK, "i32", RELAY_PROV_E_PSK);

    /* relay_t is opaque to Rust, which only allocates it, and sets next_id in tests. */
    layout("RELAY", sizeof(relay_t), _Alignof(relay_t), NULL, 0);
    USIZE(RELAY_NEXT_ID_OFFSET, offsetof(relay_t, next_id));
    USIZE(RELAY_NEXT_ID_SIZE, sizeof(((relay_t *)NULL)->next_id));
    LAYOUT(CONFIG, relay_config_t, offsetof(relay_config_t, max_clients),
           offsetof(relay_config_t, max_line), offsetof(relay_config_t, txq_size),
           offsetof(relay_config_t, uartq_size), offsetof(relay_config_t, stall_timeout_ms),
           offsetof(relay_config_t, mode), offsetof(relay_config_t, eol),
           offsetof(relay_config_t, reserved));
    LAYOUT(CLIENT_STATS, relay_client_stats_t, offsetof(relay_client_stats_t, id),
           offsetof(relay_client_stats_t, lines), offsetof(relay_client_stats_t, overflows),
           offsetof(relay_client_stats_t, txq_high), offsetof(relay_client_stats_t, bytes_in),
           offsetof(relay_client_stats_t, bytes_out), offsetof(relay_client_stats_t, drops));
    LAYOUT(STATS, relay_stats_t, offsetof(relay_stats_t, accepted),
           offsetof(relay_stats_t, rejected), offsetof(relay_stats_t, disconnects),
           offsetof(relay_stats_t, stalls), offsetof(relay_stats_t, overflows),
           offsetof(relay_stats_t, partial_discards), offsetof(relay_stats_t, uart_overruns),
           offsetof(relay_stats_t, uart_rx), offsetof(relay_stats_t, uart_tx),
           offsetof(relay_stats_t, drops), offsetof(relay_stats_t, uptime_ms));
    LAYOUT(BANNER_INFO, relay_banner_info_t, offsetof(relay_banner_info_t, ip),
           offsetof(relay_banner_info_t, build_id), offsetof(relay_banner_info_t, port),
           offsetof(relay_banner_info_t, status_port));
    LAYOUT(LIMITS, relay_limits_t, offsetof(relay_limits_t, max_clients),
           offsetof(relay_limits_t, max_line), offsetof(relay_limits_t, txq_size),
           offsetof(relay_limits_t, uartq_size), offsetof(relay_limits_t, sizeof_relay),
           offsetof(relay_limits_t, sizeof_config));
    LAYOUT(WIFI, relay_wifi_t, offsetof(relay_wifi_t, ssid_len), offsetof(relay_wifi_t, psk_len),
           offsetof(relay_wifi_t, ssid), offsetof(relay_wifi_t, psk));
    LAYOUT(PROVISION, relay_provision_t, offsetof(relay_provision_t, len),
           offsetof(relay_provision_t, overlong), offsetof(relay_provision_t, line));
    return 0;
}
