/* relay.c - the relay state machine: slots, line framing, overflow guard, queues, stats. */
#include "relay.h"

/* Freestanding: memcpy and memset are the only library calls, and every C platform has them
 * (GCC emits them by itself anyway). No <string.h>: the lx106 toolchain ships no libc. */
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memset(void *dst, int c, size_t n);
#if defined(__GNUC__)
#define memcpy(d, s, n) __builtin_memcpy((d), (s), (n))
#define memset(d, c, n) __builtin_memset((d), (c), (n))
#endif

_Static_assert(RELAY_MAX_CLIENTS >= 1 && RELAY_MAX_CLIENTS <= 64, "RELAY_MAX_CLIENTS 1..64");
_Static_assert(RELAY_MAX_LINE >= 1 && RELAY_MAX_LINE <= 4096, "RELAY_MAX_LINE 1..4096");
_Static_assert(RELAY_TXQ_SIZE >= RELAY_NOTICE_MAX && RELAY_TXQ_SIZE <= 65535,
               "RELAY_TXQ_SIZE must hold a notice and fit uint16_t");
_Static_assert(RELAY_UARTQ_SIZE >= RELAY_MAX_LINE + RELAY_EOL_MAX && RELAY_UARTQ_SIZE <= 65535,
               "RELAY_UARTQ_SIZE must hold one full line and fit uint16_t");

enum { SLOT_FREE = 0, SLOT_OPEN = 1, SLOT_CLOSING = 2 };

enum {
    F_AFTER_CR = 1u << 0,   /* last terminator was CR: a following LF or NUL belongs to it */
    F_DISCARDING = 1u << 1, /* inside an overlong line, dropping until its terminator */
    F_FULL = 1u << 2,       /* transmit queue overflowed and has not drained to half */
    F_TELNET = 1u << 3,     /* the client spoke telnet: its UART stream escapes 0xFF */
};

/* Telnet (RFC 854) bytes and the one option the relay answers yes to. */
enum {
    IAC = 255,
    DONT = 254,
    DO = 253,
    WONT = 252,
    WILL = 251,
    SB = 250,
    SE = 240,
    TELOPT_TIMING_MARK = 6, /* RFC 860 */
};

/* Where a client's telnet command stands, byte by byte, across reads. */
enum { TN_DATA = 0, TN_IAC, TN_WILL, TN_WONT, TN_DO, TN_DONT, TN_SB, TN_SB_IAC };

/* ---- small bounded text writer (no libc) ---- */

typedef struct {
    char *buf;
    size_t cap;
    size_t len; /* length of the full text, may exceed cap */
} writer_t;

static void w_bytes(writer_t *w, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (w->cap > 0 && w->len + 1 < w->cap) {
            w->buf[w->len] = s[i];
        }
        w->len++;
    }
}

static void w_str(writer_t *w, const char *s) {
    size_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    w_bytes(w, s, n);
}

/* Platform strings are copied up to a bound and with only printable, space-free ASCII so that
 * the banner stays one parseable line whatever the platform hands in. */
static void w_token(writer_t *w, const char *s, size_t max) {
    if (s == NULL || s[0] == '\0') {
        w_str(w, "-");
        return;
    }
    for (size_t i = 0; i < max && s[i] != '\0'; i++) {
        char c = s[i];
        if (c <= ' ' || c > '~') {
            c = '?';
        }
        w_bytes(w, &c, 1);
    }
}

static void w_u64(writer_t *w, uint64_t v) {
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + (v % 10u));
        v /= 10u;
    } while (v != 0 && n < sizeof tmp);
    while (n > 0) {
        w_bytes(w, &tmp[--n], 1);
    }
}

static void w_kv(writer_t *w, const char *key, uint64_t v) {
    w_str(w, " ");
    w_str(w, key);
    w_str(w, "=");
    w_u64(w, v);
}

static size_t w_finish(writer_t *w) {
    if (w->cap > 0) {
        w->buf[w->len < w->cap ? w->len : w->cap - 1] = '\0';
    }
    return w->len;
}

/* ---- rings ---- */

/* head + len < 2 * size always holds, so one subtraction wraps; the lx106 has no divider. */
static size_t ring_wrap(size_t pos, size_t size) { return pos >= size ? pos - size : pos; }

static size_t ring_put(uint8_t *ring, size_t size, uint16_t head, uint16_t *len,
                       const uint8_t *data, size_t n) {
    size_t tail = ring_wrap((size_t)head + *len, size);
    size_t first = size - tail < n ? size - tail : n;
    memcpy(ring + tail, data, first);
    memcpy(ring, data + first, n - first);
    *len = (uint16_t)(*len + n);
    return n;
}

static size_t ring_peek(const uint8_t *ring, size_t size, uint16_t head, uint16_t len,
                        const uint8_t **data) {
    size_t run = size - head < len ? size - head : len;
    *data = ring + head;
    return run;
}

/* ---- helpers ---- */

static const uint8_t EOL_BYTES[3][RELAY_EOL_MAX] = {{'\n', 0}, {'\r', 0}, {'\r', '\n'}};
static const uint8_t EOL_LEN[3] = {1, 1, 2};

static struct relay_client *slot_get(relay_t *r, int slot) {
    if (slot < 0 || slot >= (int)r->cfg.max_clients) {
        return NULL;
    }
    return &r->client[slot];
}

static const struct relay_client *slot_get_c(const relay_t *r, int slot) {
    if (slot < 0 || slot >= (int)r->cfg.max_clients) {
        return NULL;
    }
    return &r->client[slot];
}

static size_t uartq_free(const relay_t *r) { return (size_t)r->cfg.uartq_size - r->uartq_len; }

static void uartq_put(relay_t *r, const uint8_t *data, size_t n) {
    ring_put(r->uartq, r->cfg.uartq_size, r->uartq_head, &r->uartq_len, data, n);
}

static bool waitq_contains(const relay_t *r, int slot) {
    for (size_t i = 0; i < r->waitq_len; i++) {
        if (r->waitq[i] == slot) {
            return true;
        }
    }
    return false;
}

static void waitq_push(relay_t *r, int slot) {
    if (!waitq_contains(r, slot) && r->waitq_len < RELAY_MAX_CLIENTS) {
        r->waitq[r->waitq_len++] = (int8_t)slot;
    }
}

static void waitq_remove(relay_t *r, int slot) {
    size_t j = 0;
    for (size_t i = 0; i < r->waitq_len; i++) {
        if (r->waitq[i] != slot) {
            r->waitq[j++] = r->waitq[i];
        }
    }
    r->waitq_len = (uint8_t)j;
}

/* A slot may hand a unit to the UART only if no earlier-blocked slot is waiting: this keeps
 * units in the order they completed and stops short units starving a long one. */
static bool may_commit(const relay_t *r, int slot, size_t need) {
    if (r->waitq_len > 0 && r->waitq[0] != slot) {
        return false;
    }
    return uartq_free(r) >= need;
}

static void committed(relay_t *r, int slot) {
    if (r->waitq_len > 0 && r->waitq[0] == slot) {
        waitq_remove(r, slot);
    }
    r->client[slot].st.lines++;
}

/* Queue bytes for one client. A unit that does not fit whole is dropped whole when atomic
 * (notices), otherwise truncated to what fits; dropped bytes are counted and start the
 * stall clock. */
static void txq_push(relay_t *r, struct relay_client *c, const uint8_t *data, size_t n,
                     bool atomic) {
    size_t room = (size_t)r->cfg.txq_size - c->txq_len;
    size_t take = n <= room ? n : (atomic ? 0 : room);
    if (take > 0) {
        ring_put(c->txq, r->cfg.txq_size, c->txq_head, &c->txq_len, data, take);
        if (c->txq_len > c->st.txq_high) {
            c->st.txq_high = c->txq_len;
        }
    }
    if (take < n) {
        c->st.drops += n - take;
        r->st.drops += n - take;
        if (!(c->flags & F_FULL)) {
            c->flags |= F_FULL;
            c->full_since = r->now_ms;
        }
    }
}

/* UART bytes for a telnet client: each 0xFF doubled (IAC IAC), the pair queued whole. */
static void txq_push_escaped(relay_t *r, struct relay_client *c, const uint8_t *data,
                             size_t n) {
    static const uint8_t iac_iac[2] = {IAC, IAC};
    size_t start = 0;
    for (size_t k = 0; k < n; k++) {
        if (data[k] == IAC) {
            txq_push(r, c, data + start, k - start, false);
            txq_push(r, c, iac_iac, 2, true);
            start = k + 1;
        }
    }
    txq_push(r, c, data + start, n - start, false);
}

static void release(relay_t *r, struct relay_client *c, int slot) {
    if (c->line_len > 0 || (c->flags & F_DISCARDING)) {
        r->st.partial_discards++;
    }
    waitq_remove(r, slot);
    r->st.disconnects++;
    memset(c, 0, sizeof *c);
}

/* ---- setup ---- */

void relay_config_default(relay_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->max_clients = RELAY_MAX_CLIENTS;
    cfg->max_line = RELAY_MAX_LINE;
    cfg->txq_size = RELAY_TXQ_SIZE;
    cfg->uartq_size = RELAY_UARTQ_SIZE;
    cfg->stall_timeout_ms = RELAY_STALL_TIMEOUT_MS;
    cfg->mode = RELAY_MODE;
    cfg->eol = RELAY_EOL;
}

int relay_init(relay_t *r, const relay_config_t *cfg, uint32_t now_ms) {
    if (cfg->max_clients < 1 || cfg->max_clients > RELAY_MAX_CLIENTS) {
        return RELAY_E_MAX_CLIENTS;
    }
    if (cfg->max_line < 1 || cfg->max_line > RELAY_MAX_LINE) {
        return RELAY_E_MAX_LINE;
    }
    if (cfg->txq_size < RELAY_NOTICE_MAX || cfg->txq_size > RELAY_TXQ_SIZE) {
        return RELAY_E_TXQ_SIZE;
    }
    if (cfg->uartq_size < (uint32_t)cfg->max_line + RELAY_EOL_MAX ||
        cfg->uartq_size > RELAY_UARTQ_SIZE) {
        return RELAY_E_UARTQ_SIZE;
    }
    if (cfg->mode > RELAY_MODE_RAW) {
        return RELAY_E_MODE;
    }
    if (cfg->eol > RELAY_EOL_CRLF) {
        return RELAY_E_EOL;
    }
    if (cfg->reserved != 0) {
        return RELAY_E_RESERVED;
    }
    memset(r, 0, sizeof *r);
    r->cfg = *cfg;
    r->now_ms = now_ms;
    r->next_id = 1;
    return RELAY_OK;
}

const char *relay_strerror(int status) {
    switch (status) {
    case RELAY_OK: return "ok";
    case RELAY_E_MAX_CLIENTS: return "max_clients";
    case RELAY_E_MAX_LINE: return "max_line";
    case RELAY_E_TXQ_SIZE: return "txq_size";
    case RELAY_E_UARTQ_SIZE: return "uartq_size";
    case RELAY_E_MODE: return "mode";
    case RELAY_E_EOL: return "eol";
    case RELAY_E_RESERVED: return "reserved";
    default: return "unknown";
    }
}

/* ---- events ---- */

int relay_accept(relay_t *r) {
    for (int i = 0; i < (int)r->cfg.max_clients; i++) {
        struct relay_client *c = &r->client[i];
        if (c->state == SLOT_FREE) {
            c->state = SLOT_OPEN;
            c->st.id = r->next_id++;
            r->st.accepted++;
            return i;
        }
    }
    r->st.rejected++;
    return RELAY_REJECTED;
}

static size_t input_raw(relay_t *r, int slot, struct relay_client *c, const uint8_t *data,
                        size_t len) {
    size_t n = len < r->cfg.max_line ? len : r->cfg.max_line;
    if (!may_commit(r, slot, n)) {
        waitq_push(r, slot);
        return 0;
    }
    uartq_put(r, data, n);
    committed(r, slot);
    c->st.bytes_in += n;
    return n;
}

static void overflow(relay_t *r, struct relay_client *c) {
    writer_t w = {0};
    char notice[RELAY_NOTICE_MAX];
    w.buf = notice;
    w.cap = sizeof notice;
    w_str(&w, "!relay overflow");
    w_kv(&w, "max_line", r->cfg.max_line);
    w_str(&w, "\r\n");
    size_t n = w_finish(&w);
    c->flags |= F_DISCARDING;
    c->line_len = 0;
    c->st.overflows++;
    r->st.overflows++;
    txq_push(r, c, (const uint8_t *)notice, n < sizeof notice ? n : sizeof notice - 1, true);
}

/* The relay refuses every option (RFC 1143: we never enable one, so each WILL gets DONT and
 * each DO gets WONT, once per request; WONT and DONT need no answer, so nothing loops), except
 * that DO TIMING-MARK is answered WILL, which is how RFC 860 marks "all before this is done". */
static void telnet_reply(relay_t *r, struct relay_client *c, uint8_t verb, uint8_t option) {
    const uint8_t reply[3] = {IAC, verb, option};
    txq_push(r, c, reply, sizeof reply, true);
}

/* Takes one byte of a telnet command. Returns true if it was the command's; with *data set it
 * stands for a 0xFF data byte (IAC IAC). */
static bool telnet_byte(relay_t *r, struct relay_client *c, uint8_t b, bool *data) {
    *data = false;
    switch (c->telnet) {
    case TN_DATA:
        if (b != IAC) {
            return false;
        }
        c->telnet = TN_IAC;
        return true;
    case TN_IAC:
        c->flags |= F_TELNET;
        c->telnet = TN_DATA;
        switch (b) {
        case IAC: *data = true; break;
        case WILL: c->telnet = TN_WILL; break;
        case WONT: c->telnet = TN_WONT; break;
        case DO: c->telnet = TN_DO; break;
        case DONT: c->telnet = TN_DONT; break;
        case SB: c->telnet = TN_SB; break;
        default: break; /* IP, AYT, NOP, ...: none reaches the UART */
        }
        return true;
    case TN_WILL: telnet_reply(r, c, DONT, b); break;
    case TN_DO: telnet_reply(r, c, b == TELOPT_TIMING_MARK ? WILL : WONT, b); break;
    case TN_SB: c->telnet = b == IAC ? TN_SB_IAC : TN_SB; return true;
    case TN_SB_IAC: c->telnet = b == SE ? TN_DATA : TN_SB; return true;
    default: break; /* WONT, DONT: an answer, or a peer turning off what was never on */
    }
    c->telnet = TN_DATA;
    return true;
}

/* One content byte of a line: the overflow guard, or the line buffer. */
static void line_byte(relay_t *r, struct relay_client *c, uint8_t b) {
    if (c->flags & F_DISCARDING) {
        return;
    }
    if (c->line_len >= r->cfg.max_line) {
        overflow(r, c);
        return;
    }
    c->line[c->line_len++] = b;
}

static size_t input_line(relay_t *r, int slot, struct relay_client *c, const uint8_t *data,
                         size_t len) {
    const uint8_t *eol = EOL_BYTES[r->cfg.eol];
    const size_t eol_len = EOL_LEN[r->cfg.eol];
    size_t i = 0;
    while (i < len) {
        uint8_t b = data[i];
        if (c->telnet != TN_DATA || b == IAC) {
            bool is_data;
            telnet_byte(r, c, b, &is_data);
            i++;
            if (!is_data) {
                continue; /* a command is out of band: a CR LF around it stays one terminator */
            }
            c->flags &= (uint8_t)~F_AFTER_CR;
            line_byte(r, c, IAC);
            continue;
        }
        if (c->flags & F_AFTER_CR) {
            c->flags &= (uint8_t)~F_AFTER_CR;
            /* CR LF is one terminator; so is CR NUL, telnet's bare CR (RFC 854). */
            if (b == '\n' || b == '\0') {
                i++;
                continue;
            }
        }
        if (b == '\n' || b == '\r') {
            if (c->flags & F_DISCARDING) {
                c->flags &= (uint8_t)~F_DISCARDING;
            } else {
                /* The terminator is consumed only once its line is in the UART queue, so a
                 * line that must wait keeps its terminator with the platform. */
                if (!may_commit(r, slot, (size_t)c->line_len + eol_len)) {
                    waitq_push(r, slot);
                    break;
                }
                uartq_put(r, c->line, c->line_len);
                uartq_put(r, eol, eol_len);
                c->line_len = 0;
                committed(r, slot);
            }
            if (b == '\r') {
                c->flags |= F_AFTER_CR;
            }
            i++;
            continue;
        }
        if ((c->flags & F_DISCARDING) || c->line_len >= r->cfg.max_line) {
            line_byte(r, c, b);
            i++;
            continue;
        }
        /* Copy the run of plain bytes up to the next terminator, IAC or the line limit. */
        size_t run = 0;
        size_t room = (size_t)r->cfg.max_line - c->line_len;
        while (run < room && i + run < len && data[i + run] != '\n' && data[i + run] != '\r' &&
               data[i + run] != IAC) {
            run++;
        }
        memcpy(c->line + c->line_len, data + i, run);
        c->line_len = (uint16_t)(c->line_len + run);
        i += run;
    }
    c->st.bytes_in += i;
    return i;
}

size_t relay_client_input(relay_t *r, int slot, const uint8_t *data, size_t len) {
    struct relay_client *c = slot_get(r, slot);
    if (c == NULL || c->state != SLOT_OPEN || data == NULL || len == 0) {
        return 0;
    }
    if (r->cfg.mode == RELAY_MODE_RAW) {
        return input_raw(r, slot, c, data, len);
    }
    return input_line(r, slot, c, data, len);
}

void relay_client_closed(relay_t *r, int slot) {
    struct relay_client *c = slot_get(r, slot);
    if (c == NULL || c->state == SLOT_FREE) {
        return;
    }
    release(r, c, slot);
}

void relay_uart_input(relay_t *r, const uint8_t *data, size_t len) {
    if (data == NULL || len == 0) {
        return;
    }
    r->st.uart_rx += len;
    for (int i = 0; i < (int)r->cfg.max_clients; i++) {
        struct relay_client *c = &r->client[i];
        if (c->state != SLOT_OPEN) {
            continue;
        }
        if (c->flags & F_TELNET) {
            txq_push_escaped(r, c, data, len);
        } else {
            txq_push(r, c, data, len, false);
        }
    }
}

void relay_uart_overrun(relay_t *r) { r->st.uart_overruns++; }

void relay_tick(relay_t *r, uint32_t now_ms) {
    /* Unsigned difference keeps uptime and stall ages right across the 49-day wrap. */
    r->st.uptime_ms += (uint32_t)(now_ms - r->now_ms);
    r->now_ms = now_ms;
    if (r->cfg.stall_timeout_ms == 0) {
        return;
    }
    for (int i = 0; i < (int)r->cfg.max_clients; i++) {
        struct relay_client *c = &r->client[i];
        if (c->state == SLOT_OPEN && (c->flags & F_FULL) &&
            (uint32_t)(now_ms - c->full_since) >= r->cfg.stall_timeout_ms) {
            c->state = SLOT_CLOSING;
            r->st.stalls++;
            waitq_remove(r, i);
        }
    }
}

/* ---- work ---- */

size_t relay_uart_pending(const relay_t *r, const uint8_t **data) {
    return ring_peek(r->uartq, r->cfg.uartq_size, r->uartq_head, r->uartq_len, data);
}

void relay_uart_consume(relay_t *r, size_t n) {
    if (n > r->uartq_len) {
        n = r->uartq_len;
    }
    r->uartq_head = (uint16_t)ring_wrap((size_t)r->uartq_head + n, r->cfg.uartq_size);
    r->uartq_len = (uint16_t)(r->uartq_len - n);
    r->st.uart_tx += n;
}

size_t relay_client_pending(const relay_t *r, int slot, const uint8_t **data) {
    const struct relay_client *c = slot_get_c(r, slot);
    if (c == NULL || c->state != SLOT_OPEN) {
        *data = NULL;
        return 0;
    }
    return ring_peek(c->txq, r->cfg.txq_size, c->txq_head, c->txq_len, data);
}

size_t relay_client_copy(const relay_t *r, int slot, uint8_t *out, size_t max) {
    const struct relay_client *c = slot_get_c(r, slot);
    if (c == NULL || c->state != SLOT_OPEN) {
        return 0;
    }
    const size_t n = c->txq_len < max ? c->txq_len : max;
    const size_t to_end = (size_t)r->cfg.txq_size - c->txq_head;
    const size_t first = to_end < n ? to_end : n;
    memcpy(out, c->txq + c->txq_head, first);
    memcpy(out + first, c->txq, n - first);
    return n;
}

void relay_client_consume(relay_t *r, int slot, size_t n) {
    struct relay_client *c = slot_get(r, slot);
    if (c == NULL || c->state != SLOT_OPEN) {
        return;
    }
    if (n > c->txq_len) {
        n = c->txq_len;
    }
    c->txq_head = (uint16_t)ring_wrap((size_t)c->txq_head + n, r->cfg.txq_size);
    c->txq_len = (uint16_t)(c->txq_len - n);
    c->st.bytes_out += n;
    /* Hysteresis: a reader that drips one byte at a time is still stalled. */
    if ((c->flags & F_FULL) && c->txq_len <= r->cfg.txq_size / 2) {
        c->flags &= (uint8_t)~F_FULL;
    }
}

int relay_next_close(relay_t *r) {
    for (int i = 0; i < (int)r->cfg.max_clients; i++) {
        struct relay_client *c = &r->client[i];
        if (c->state == SLOT_CLOSING) {
            release(r, c, i);
            return i;
        }
    }
    return -1;
}

/* ---- inspection and text ---- */

bool relay_client_open(const relay_t *r, int slot) {
    const struct relay_client *c = slot_get_c(r, slot);
    return c != NULL && c->state == SLOT_OPEN;
}

bool relay_client_stats(const relay_t *r, int slot, relay_client_stats_t *out) {
    const struct relay_client *c = slot_get_c(r, slot);
    if (c == NULL || c->state == SLOT_FREE) {
        return false;
    }
    *out = c->st;
    return true;
}

void relay_stats(const relay_t *r, relay_stats_t *out) { *out = r->st; }

static uint32_t clients_open(const relay_t *r) {
    uint32_t n = 0;
    for (int i = 0; i < (int)r->cfg.max_clients; i++) {
        n += r->client[i].state == SLOT_OPEN;
    }
    return n;
}

size_t relay_format_reject(const relay_t *r, char *buf, size_t cap) {
    writer_t w = {buf, cap, 0};
    w_str(&w, "!relay busy");
    w_kv(&w, "max_clients", r->cfg.max_clients);
    w_str(&w, "\r\n");
    return w_finish(&w);
}

static const char *const MODE_NAME[2] = {"line", "raw"};
static const char *const EOL_NAME[3] = {"lf", "cr", "crlf"};

size_t relay_format_banner(const relay_t *r, const relay_banner_info_t *info, char *buf,
                           size_t cap) {
    writer_t w = {buf, cap, 0};
    w_str(&w, "relay ready version=" RELAY_VERSION " build=");
    w_token(&w, info->build_id, 40);
    w_str(&w, " ip=");
    w_token(&w, info->ip, 40);
    w_kv(&w, "port", info->port);
    w_kv(&w, "status_port", info->status_port);
    w_kv(&w, "max_clients", r->cfg.max_clients);
    w_kv(&w, "max_line", r->cfg.max_line);
    w_kv(&w, "txq", r->cfg.txq_size);
    w_kv(&w, "uartq", r->cfg.uartq_size);
    w_kv(&w, "stall_ms", r->cfg.stall_timeout_ms);
    w_str(&w, " mode=");
    w_str(&w, MODE_NAME[r->cfg.mode]);
    w_str(&w, " eol=");
    w_str(&w, EOL_NAME[r->cfg.eol]);
    w_str(&w, "\r\n");
    return w_finish(&w);
}

size_t relay_format_status(const relay_t *r, char *buf, size_t cap) {
    writer_t w = {buf, cap, 0};
    const relay_stats_t *s = &r->st;
    w_str(&w, "relay status version=" RELAY_VERSION);
    w_kv(&w, "uptime_ms", s->uptime_ms);
    w_kv(&w, "clients", clients_open(r));
    w_kv(&w, "max_clients", r->cfg.max_clients);
    w_kv(&w, "accepted", s->accepted);
    w_kv(&w, "rejected", s->rejected);
    w_kv(&w, "disconnects", s->disconnects);
    w_kv(&w, "stalls", s->stalls);
    w_kv(&w, "overflows", s->overflows);
    w_kv(&w, "partial_discards", s->partial_discards);
    w_kv(&w, "uart_overruns", s->uart_overruns);
    w_kv(&w, "uart_rx", s->uart_rx);
    w_kv(&w, "uart_tx", s->uart_tx);
    w_kv(&w, "drops", s->drops);
    w_kv(&w, "uartq", r->uartq_len);
    w_str(&w, "\r\n");
    for (int i = 0; i < (int)r->cfg.max_clients; i++) {
        const struct relay_client *c = &r->client[i];
        if (c->state != SLOT_OPEN) {
            continue;
        }
        w_str(&w, "client");
        w_kv(&w, "slot", (uint64_t)i);
        w_kv(&w, "id", c->st.id);
        w_kv(&w, "bytes_in", c->st.bytes_in);
        w_kv(&w, "bytes_out", c->st.bytes_out);
        w_kv(&w, "lines", c->st.lines);
        w_kv(&w, "overflows", c->st.overflows);
        w_kv(&w, "drops", c->st.drops);
        w_kv(&w, "txq", c->txq_len);
        w_kv(&w, "txq_high", c->st.txq_high);
        w_str(&w, "\r\n");
    }
    w_str(&w, "end\r\n");
    return w_finish(&w);
}

/* ---- provisioning ---- */

static const char PROV_PREFIX[] = "relay provision ";
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
    w_str(&w, "relay boot version=" RELAY_VERSION " build=");
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
        w_str(&w, "relay provision ok wifi=");
        w_digest(&w, wifi);
    } else {
        w_str(&w, "relay provision error ");
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

void relay_limits(relay_limits_t *out) {
    out->max_clients = RELAY_MAX_CLIENTS;
    out->max_line = RELAY_MAX_LINE;
    out->txq_size = RELAY_TXQ_SIZE;
    out->uartq_size = RELAY_UARTQ_SIZE;
    out->sizeof_relay = (uint32_t)sizeof(relay_t);
    out->sizeof_config = (uint32_t)sizeof(relay_config_t);
}
