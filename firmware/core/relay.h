/* relay.h - portable sans-IO core of the serial<->TCP relay (C11, freestanding, no heap).
 *
 * The behaviour is specified in README.md next to this file. The core never reads a clock,
 * a socket or a UART: the platform feeds events in and drains work out. All storage lives in
 * a caller-owned relay_t whose size is fixed by the compile-time bounds below. WiFi
 * provisioning at boot is apart, in provision.h.
 */
#ifndef RELAY_H
#define RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RELAY_VERSION "0.1.0"
/* What the banner line and the status text begin with. */
#define RELAY_BANNER_PREFIX "relay ready "
#define RELAY_STATUS_PREFIX "relay status "

/* How far any build may raise the bounds below: slot numbers fit int8_t, queue positions
 * uint16_t. */
#define RELAY_MAX_CLIENTS_LIMIT 64
#define RELAY_MAX_LINE_LIMIT 4096
#define RELAY_QUEUE_SIZE_LIMIT 65535

/* Compile-time bounds. The runtime config may lower each of them, never raise it. */
#ifndef RELAY_MAX_CLIENTS
#define RELAY_MAX_CLIENTS 4
#endif
#ifndef RELAY_MAX_LINE
#define RELAY_MAX_LINE 256
#endif
#ifndef RELAY_TXQ_SIZE
#define RELAY_TXQ_SIZE 1024 /* per client, UART -> client */
#endif
#ifndef RELAY_UARTQ_SIZE
#define RELAY_UARTQ_SIZE 512 /* shared, clients -> UART */
#endif

/* Longest notice line the core queues to a client; a client queue must hold one. */
#define RELAY_NOTICE_MAX 64
/* Longest end-of-line sequence written after each forwarded line (CRLF). */
#define RELAY_EOL_MAX 2
/* Longest banner line, and status text for RELAY_MAX_CLIENTS clients, incl. NUL. */
#define RELAY_BANNER_MAX 320
#define RELAY_STATUS_MAX (384 + 256 * RELAY_MAX_CLIENTS)

enum relay_mode { RELAY_MODE_LINE = 0, RELAY_MODE_RAW = 1 };
enum relay_eol { RELAY_EOL_LF = 0, RELAY_EOL_CR = 1, RELAY_EOL_CRLF = 2 };

/* What relay_config_default() chooses for the rest; a firmware build sets them with -D. */
#ifndef RELAY_STALL_TIMEOUT_MS
#define RELAY_STALL_TIMEOUT_MS 5000
#endif
#ifndef RELAY_MODE
#define RELAY_MODE RELAY_MODE_LINE
#endif
#ifndef RELAY_EOL
#define RELAY_EOL RELAY_EOL_LF
#endif

typedef struct relay_config {
    uint16_t max_clients;      /* 1 ..= RELAY_MAX_CLIENTS */
    uint16_t max_line;         /* 1 ..= RELAY_MAX_LINE */
    uint16_t txq_size;         /* RELAY_NOTICE_MAX ..= RELAY_TXQ_SIZE */
    uint16_t uartq_size;       /* max_line + RELAY_EOL_MAX ..= RELAY_UARTQ_SIZE */
    uint32_t stall_timeout_ms; /* 0 disables stall closing */
    uint8_t mode;              /* enum relay_mode */
    uint8_t eol;               /* enum relay_eol */
    uint16_t reserved;         /* must be 0 */
} relay_config_t;

/* relay_init() results. Each error names exactly one config field. */
enum relay_status {
    RELAY_OK = 0,
    RELAY_E_MAX_CLIENTS = -1,
    RELAY_E_MAX_LINE = -2,
    RELAY_E_TXQ_SIZE = -3,
    RELAY_E_UARTQ_SIZE = -4,
    RELAY_E_MODE = -5,
    RELAY_E_EOL = -6,
    RELAY_E_RESERVED = -7,
};

/* relay_accept() result when every slot is taken. */
#define RELAY_REJECTED (-1)

typedef struct relay_client_stats {
    uint32_t id;        /* connection number since boot, from 1, wrapping to 1; 0: free slot */
    uint32_t lines;     /* lines (line mode) or chunks (raw mode) forwarded to the UART */
    uint32_t overflows; /* overlong lines discarded by the guard */
    uint32_t txq_high;  /* transmit-queue high-water mark, bytes */
    uint64_t bytes_in;  /* bytes accepted from the client */
    uint64_t bytes_out; /* bytes the platform took from this client's queue */
    uint64_t drops;     /* bytes dropped for this client because its queue was full */
} relay_client_stats_t;

typedef struct relay_stats {
    uint32_t accepted;
    uint32_t rejected;
    uint32_t disconnects;      /* slots freed, for any reason */
    uint32_t stalls;           /* of those, closed by the stall timeout */
    uint32_t overflows;        /* overlong lines, all clients */
    uint32_t partial_discards; /* unterminated lines discarded at disconnect */
    uint32_t uart_overruns;    /* times the platform lost UART input it could not buffer */
    uint64_t uart_rx;          /* bytes read from the UART */
    uint64_t uart_tx;          /* bytes the platform wrote to the UART */
    uint64_t drops;            /* bytes dropped, all client queues */
    uint64_t uptime_ms;
} relay_stats_t;

typedef struct relay_banner_info {
    const char *ip;       /* NUL-terminated, platform-provided */
    const char *build_id; /* NUL-terminated */
    uint16_t port;        /* data port */
    uint16_t status_port; /* 0 when the platform serves no status channel */
} relay_banner_info_t;

/* Private state. Declared here only so that platforms can allocate it statically. */
struct relay_client {
    relay_client_stats_t st;
    uint32_t full_since;
    uint16_t line_len;
    uint16_t txq_head;
    uint16_t txq_len;
    uint8_t state;
    uint8_t flags;
    uint8_t telnet; /* where the client's telnet command stands (line mode) */
    uint8_t line[RELAY_MAX_LINE];
    uint8_t txq[RELAY_TXQ_SIZE];
};

typedef struct relay {
    relay_config_t cfg;
    relay_stats_t st;
    uint32_t now_ms;
    uint32_t next_id;
    uint16_t uartq_head;
    uint16_t uartq_len;
    uint8_t waitq_len;
    int8_t waitq[RELAY_MAX_CLIENTS];
    uint8_t uartq[RELAY_UARTQ_SIZE];
    struct relay_client client[RELAY_MAX_CLIENTS];
} relay_t;

/* --- setup --- */
void relay_config_default(relay_config_t *cfg);
int relay_init(relay_t *r, const relay_config_t *cfg, uint32_t now_ms);
const char *relay_strerror(int status); /* the config field an error names */

/* --- events in --- */
int relay_accept(relay_t *r); /* slot, or RELAY_REJECTED: send relay_format_reject(), close */
size_t relay_client_input(relay_t *r, int slot, const uint8_t *data, size_t len); /* consumed */
void relay_client_closed(relay_t *r, int slot);
void relay_uart_input(relay_t *r, const uint8_t *data, size_t len); /* always consumes all */
void relay_uart_overrun(relay_t *r); /* the platform's UART receive buffer overflowed */
void relay_tick(relay_t *r, uint32_t now_ms);

/* --- work out --- */
size_t relay_uart_pending(const relay_t *r, const uint8_t **data);
void relay_uart_consume(relay_t *r, size_t n);
size_t relay_client_pending(const relay_t *r, int slot, const uint8_t **data);
/* Copies up to max queued bytes, across the ring's end, without consuming them: a platform
 * whose writes are few and costly (lwIP's segments) fills each one. */
size_t relay_client_copy(const relay_t *r, int slot, uint8_t *out, size_t max);
void relay_client_consume(relay_t *r, int slot, size_t n);
int relay_next_close(relay_t *r); /* slot to close now (already freed), or -1 */

/* --- inspection and text --- */
bool relay_client_open(const relay_t *r, int slot);
bool relay_client_stats(const relay_t *r, int slot, relay_client_stats_t *out);
void relay_stats(const relay_t *r, relay_stats_t *out);
/* Formatters behave like snprintf: they write at most cap - 1 bytes and a NUL (when cap > 0)
 * and return the length of the full text, so a result >= cap means it was truncated. */
size_t relay_format_reject(const relay_t *r, char *buf, size_t cap);
size_t relay_format_banner(const relay_t *r, const relay_banner_info_t *info, char *buf,
                           size_t cap);
size_t relay_format_status(const relay_t *r, char *buf, size_t cap);

/* Compile-time bounds of this build, for bindings. */
typedef struct relay_limits {
    uint32_t max_clients, max_line, txq_size, uartq_size, sizeof_relay, sizeof_config;
} relay_limits_t;
void relay_limits(relay_limits_t *out);

#ifdef __cplusplus
}
#endif

#endif /* RELAY_H */
