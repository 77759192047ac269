/* relay.c - the relay state machine: slots, line framing, overflow guard, queues, stats. */
#include "relay.h"
#include "relay_internal.h"

_Static_assert(RELAY_MAX_CLIENTS >= 1 && RELAY_MAX_CLIENTS <= RELAY_MAX_CLIENTS_LIMIT,
               "RELAY_MAX_CLIENTS 1..RELAY_MAX_CLIENTS_LIMIT");
_Static_assert(RELAY_MAX_CLIENTS_LIMIT <= 127, "slot numbers fit the int8_t wait queue");
_Static_assert(RELAY_MAX_LINE >= 1 && RELAY_MAX_LINE <= RELAY_MAX_LINE_LIMIT,
               "RELAY_MAX_LINE 1..RELAY_MAX_LINE_LIMIT");
_Static_assert(RELAY_QUEUE_SIZE_LIMIT <= UINT16_MAX, "queue positions fit uint16_t");
_Static_assert(RELAY_TXQ_SIZE >= RELAY_NOTICE_MAX && RELAY_TXQ_SIZE <= RELAY_QUEUE_SIZE_LIMIT,
               "RELAY_TXQ_SIZE must hold a notice and fit uint16_t");
_Static_assert(RELAY_UARTQ_SIZE >= RELAY_MAX_LINE + RELAY_EOL_MAX &&
                   RELAY_UARTQ_SIZE <= RELAY_QUEUE_SIZE_LIMIT,
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
            c->st.id = r->next_id;
            /* 0 is a free slot's id: after 0xFFFFFFFF, ids start again at 1. */
            r->next_id = r->next_id == UINT32_MAX ? 1 : r->next_id + 1;
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
    w_str(&w, RELAY_BANNER_PREFIX "version=" RELAY_VERSION " build=");
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
    w_str(&w, RELAY_STATUS_PREFIX "version=" RELAY_VERSION);
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

void relay_limits(relay_limits_t *out) {
    out->max_clients = RELAY_MAX_CLIENTS;
    out->max_line = RELAY_MAX_LINE;
    out->txq_size = RELAY_TXQ_SIZE;
    out->uartq_size = RELAY_UARTQ_SIZE;
    out->sizeof_relay = (uint32_t)sizeof(relay_t);
    out->sizeof_config = (uint32_t)sizeof(relay_config_t);
}
