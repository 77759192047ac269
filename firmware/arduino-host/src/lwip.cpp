// lwip.cpp - the TCP model: PCB and segment pools, the send buffer with its acknowledgements,
// the receive window, TIME_WAIT and friends, and tcp_alloc's choice of a connection to kill.
#include "lwip.h"

#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "ClientContext.h"
#include "ESP8266WiFi.h"
#include "host.h"

namespace lwip {

bool netif_up(); // wifi.cpp: connections arrive only once the station has joined

namespace {

Pcb pcbs[MEMP_NUM_TCP_PCB];
Listener listeners[MEMP_NUM_TCP_PCB_LISTEN];
uint64_t next_order = 1;
uint32_t segs_in_use = 0; // MEMP_TCP_SEG, shared by every connection

uint64_t now_ms() { return host::now_us() / 1000; }
uint32_t id(const Pcb &p) { return host::WATCH_PCB + static_cast<uint32_t>(&p - pcbs); }
uint32_t id(const Listener &l) {
    return host::WATCH_LISTENER + static_cast<uint32_t>(&l - listeners);
}

// The host socket goes; the host keeps whatever TIME_WAIT it owes.
void close_fd(Pcb &p) {
    host::unwatch(id(p));
    ::close(p.fd);
    p.fd = -1;
}
uint64_t ticks(uint64_t ms) { return ms / TCP_SLOW_INTERVAL_MS; }
uint64_t inactivity(const Pcb &p) { return ticks(now_ms()) - ticks(p.tmr_ms); }

// The PCB goes back to the pool; `reset` sends a RST on the host socket.
void release(Pcb &p, bool reset) {
    if (p.fd >= 0) {
        if (reset) {
            linger l = {1, 0};
            setsockopt(p.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        }
        close_fd(p);
    }
    for (const Sent &s : p.unacked) {
        segs_in_use -= s.segs;
    }
    if (p.backlog_pend) {
        backlog_accepted(&p); // tcp_pcb_purge gives the backlog slot back (tcp.c:2141)
    }
    p = Pcb{};
    host::progress();
}

// The PCB dies under the application (a RST, a kill, a timeout): its error callback runs
// (TCP_EVENT_ERR), so the ClientContext lets go of it.
void fail(Pcb &p, bool reset) {
    ClientContext *ctx = p.ctx;
    release(p, reset);
    if (ctx != nullptr) {
        ctx->on_error();
    }
}

// The used PCBs in the order lwIP walks its lists: newest first (TCP_REG pushes at the head).
std::vector<Pcb *> newest_first() {
    std::vector<Pcb *> v;
    for (Pcb &p : pcbs) {
        if (p.used) {
            v.push_back(&p);
        }
    }
    std::sort(v.begin(), v.end(), [](const Pcb *a, const Pcb *b) { return a->order > b->order; });
    return v;
}

// tcp_kill_timewait and tcp_kill_state (tcp.c:1753-1806): the PCB in `state` idle longest;
// `>=` lets the older one win a tie.
Pcb *oldest_in(int state) {
    Pcb *best = nullptr;
    uint64_t most = 0;
    for (Pcb *p : newest_first()) {
        if (p->state == state && inactivity(*p) >= most) {
            most = inactivity(*p);
            best = p;
        }
    }
    return best;
}

// tcp_kill_prio (tcp.c:1707-1748): the lowest priority below `prio`, and among equals the one
// idle longest.
Pcb *kill_prio_victim(uint8_t prio) {
    uint8_t mprio = prio < TCP_PRIO_MAX ? prio : TCP_PRIO_MAX;
    if (mprio == 0) {
        return nullptr;
    }
    mprio--;
    Pcb *inactive = nullptr;
    uint64_t most = 0;
    for (Pcb *p : newest_first()) {
        if (p->state == TIME_WAIT) {
            continue; // not on tcp_active_pcbs
        }
        if (p->prio < mprio || (p->prio == mprio && inactivity(*p) >= most)) {
            most = inactivity(*p);
            inactive = p;
            mprio = p->prio;
        }
    }
    return inactive;
}

Pcb *free_slot() {
    for (Pcb &p : pcbs) {
        if (!p.used) {
            return &p;
        }
    }
    return nullptr;
}

// tcp_alloc (tcp.c:1835-1890): with the pool empty, free the oldest TIME_WAIT, then LAST_ACK,
// then CLOSING PCB; failing that, reset the most idle connection of lower priority.
Pcb *alloc(uint8_t prio) {
    if (Pcb *p = free_slot()) {
        return p;
    }
    for (int s : {TIME_WAIT, LAST_ACK, CLOSING}) {
        if (Pcb *old = oldest_in(s)) {
            host::count(host::PCB_RECYCLED);
            release(*old, false); // no RST: no data is lost (tcp.c:1779)
            return free_slot();
        }
    }
    if (Pcb *victim = kill_prio_victim(prio)) {
        host::count(host::PCB_RESETS);
        fail(*victim, true); // tcp_abort: a RST, and the error callback
        return free_slot();
    }
    return nullptr;
}

void set_int(int fd, int level, int name, int value) {
    setsockopt(fd, level, name, &value, sizeof value);
}

// A SYN reached a listener: lwIP's tcp_listen_input (tcp_in.c:630-700), then WiFiServer's
// accept callback. The host kernel has already completed the handshake.
bool take_connection(Listener &l) {
    const int fd = accept4(l.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    Pcb *p = alloc(TCP_PRIO_NORMAL); // a listener's new PCBs keep tcp_new's priority
    if (p == nullptr) {
        // lwIP drops the SYN; the host has finished the handshake, so the peer hears a RST.
        linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        ::close(fd);
        host::count(host::SYN_DEFERRED);
        return true;
    }
    *p = Pcb{};
    p->used = true;
    p->state = ESTABLISHED;
    p->fd = fd;
    p->order = next_order++;
    p->tmr_ms = now_ms();
    p->listener = &l;
    p->backlog_pend = true; // tcp_listen_input counts it against the backlog (tcp_in.c:672-673)
    l.accepts_pending++;
    host::progress();
    l.server->_accept(new ClientContext(p));
    return true;
}

// Acknowledgements: the kernel's send queue says what the peer has taken, and no ACK comes
// before one modelled WiFi round trip after the data left.
void check_acks(Pcb &p) {
    if (p.unacked.empty() && !p.fin_queued) {
        return;
    }
    int outq = 0;
    if (ioctl(p.fd, SIOCOUTQ, &outq) != 0) {
        return;
    }
    // After shutdown(SHUT_WR) the FIN holds one sequence number until it is acknowledged.
    const uint64_t fin = p.fin_queued && outq > 0 ? 1 : 0;
    const uint64_t kernel_acked = p.written - (static_cast<uint64_t>(outq) - fin);
    const uint64_t now = host::now_us();
    const uint64_t rtt = host::config().rtt_us;
    bool moved = false;
    while (!p.unacked.empty() && p.unacked.front().end <= kernel_acked &&
           now >= p.unacked.front().at_us + rtt) {
        const Sent s = p.unacked.front();
        p.unacked.pop_front();
        segs_in_use -= s.segs;
        p.snd_queuelen -= s.segs;
        p.acked = s.end;
        moved = true;
    }
    if (moved) {
        p.snd_buf = TCP_SND_BUF - static_cast<uint32_t>(p.written - p.acked);
        p.tmr_ms = now_ms(); // an ACK is a segment received
        host::progress();
    }
    if (p.fin_queued && outq == 0 && p.unacked.empty() && now >= p.fin_at_us + rtt) {
        p.fin_queued = false;
        p.tmr_ms = now_ms();
        host::progress();
        switch (p.state) {
        case FIN_WAIT_1: p.state = FIN_WAIT_2; break;
        case CLOSING:
            p.state = TIME_WAIT;
            close_fd(p);
            break;
        case LAST_ACK: release(p, false); break;
        default: break;
        }
    }
}

bool can_receive(const Pcb &p) {
    return p.state == ESTABLISHED || p.state == FIN_WAIT_1 || p.state == FIN_WAIT_2;
}

// The peer's FIN (tcp_process, tcp_in.c): the application hears it through its recv callback.
void peer_fin(Pcb &p) {
    p.tmr_ms = now_ms();
    host::progress();
    switch (p.state) {
    case ESTABLISHED:
        p.state = CLOSE_WAIT;
        if (p.ctx != nullptr) {
            p.ctx->on_fin(); // may abort the PCB (ClientContext.h:598-614)
        } else {
            close(&p); // tcp_recv_null closes a PCB nobody reads
        }
        break;
    case FIN_WAIT_1: p.state = CLOSING; break;
    case FIN_WAIT_2:
        p.state = TIME_WAIT;
        close_fd(p); // the host keeps its own TIME_WAIT; the model keeps the PCB
        break;
    default: break;
    }
}

void receive(Pcb &p) {
    if ((host::ready(id(p)) & (EPOLLIN | EPOLLERR | EPOLLHUP)) == 0) {
        return;
    }
    uint8_t buf[4096];
    while (p.used && can_receive(p)) {
        // Past its window lwIP takes nothing, so those bytes stay in the host's queue. A closed
        // application takes nothing either, but any byte that comes is an error to report.
        const size_t room = p.rx_closed ? sizeof buf : std::min<size_t>(p.rcv_wnd, sizeof buf);
        if (room == 0) {
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
                fail(p, false);
            }
            return;
        }
        const ssize_t n = recv(p.fd, buf, room, MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN) {
            host::drained(id(p), EPOLLIN);
            return;
        }
        if (n > 0) {
            p.tmr_ms = now_ms();
            host::progress();
            if (p.rx_closed) {
                // Data for a PCB its application closed: tcp_input aborts it (tcp_in.c:487-492).
                release(p, true);
                return;
            }
            p.rcv_wnd -= static_cast<uint32_t>(n);
            if (p.ctx != nullptr) {
                p.ctx->on_recv(buf, static_cast<size_t>(n));
            } else {
                recved(&p, static_cast<size_t>(n)); // tcp_recv_null takes and frees it
            }
            if (static_cast<size_t>(n) < room) {
                if (p.used) {
                    host::drained(id(p), EPOLLIN);
                }
                return;
            }
        } else if (n == 0) {
            peer_fin(p);
            return;
        } else {
            if (errno != EAGAIN && errno != EINTR) {
                fail(p, false); // the peer reset, or keepalive gave up
            }
            return;
        }
    }
}

// CLOSE_WAIT, LAST_ACK, CLOSING: the peer sent its FIN, so only a reset can still arrive. Only
// CLOSE_WAIT is in the epoll set (see tcp_arm): the others hang up for good once both sides
// closed, so they are asked each pass, for the short while they last.
void watch_reset(Pcb &p) {
    if (p.state == CLOSE_WAIT && (host::ready(id(p)) & (EPOLLERR | EPOLLHUP)) == 0) {
        return;
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (p.fd >= 0 && getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
        fail(p, false);
    }
}

// tcp_slowtmr's timeouts (tcp.c): FIN_WAIT_2 after the application closed, and TIME_WAIT.
void timers(Pcb &p) {
    const uint64_t idle = now_ms() - p.tmr_ms;
    if ((p.state == FIN_WAIT_2 && p.rx_closed && idle > TCP_FIN_WAIT_TIMEOUT_MS) ||
        (p.state == TIME_WAIT && idle > 2 * TCP_MSL_MS)) {
        release(p, false);
    }
}

} // namespace

Listener *listen(uint16_t port, uint8_t backlog, WiFiServer *server) {
    Listener *l = nullptr;
    for (Listener &c : listeners) {
        if (!c.used) {
            l = &c;
            break;
        }
    }
    if (l == nullptr) {
        return nullptr; // MEMP_TCP_PCB_LISTEN is empty: tcp_listen_with_backlog fails
    }
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return nullptr;
    }
    set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1); // WiFiServer.cpp:71
    // Segments of TCP_MSS each way, as the chip's MSS option makes them; and as little as the
    // host will buffer beyond lwIP's own window (it doubles this, and keeps a 2304-byte floor).
    set_int(fd, IPPROTO_TCP, TCP_MAXSEG, static_cast<int>(MSS));
    set_int(fd, SOL_SOCKET, SO_RCVBUF, static_cast<int>(TCP_WND));
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = host::config().ip;
    // The host's queue holds as many as lwIP's backlog, so no SYN the chip would take between
    // two system tasks is dropped here; the model decides when they are taken.
    if (bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 ||
        ::listen(fd, backlog) != 0) {
        ::close(fd);
        return nullptr;
    }
    *l = Listener{};
    l->used = true;
    l->fd = fd;
    l->port = port;
    l->backlog = backlog;
    l->server = server;
    return l;
}

void listen_close(Listener *l) {
    if (l != nullptr && l->used) {
        host::unwatch(id(*l));
        ::close(l->fd);
        for (Pcb &p : pcbs) {
            if (p.listener == l) {
                p.listener = nullptr;
                p.backlog_pend = false;
            }
        }
        *l = Listener{};
    }
}

void backlog_accepted(Pcb *p) {
    if (p->backlog_pend && p->listener != nullptr) {
        p->listener->accepts_pending--;
        p->backlog_pend = false;
        host::progress();
    }
}

int state(const Pcb *p) { return p != nullptr && p->used ? p->state : CLOSED; }

Err write(Pcb *p, const uint8_t *data, size_t len) {
    // tcp_write_checks (tcp_out.c): only these states take data, and never past the buffer.
    if (p == nullptr || !p->used || (p->state != ESTABLISHED && p->state != CLOSE_WAIT)) {
        return Err::CONN;
    }
    if (len == 0) {
        return Err::OK;
    }
    if (len > p->snd_buf) {
        return Err::MEM;
    }
    // One segment, one pbuf, per TCP_MSS of data; a queue of TCP_SND_QUEUELEN pbufs per
    // connection and MEMP_NUM_TCP_SEG segments for all of them.
    const uint32_t segs = static_cast<uint32_t>((len + MSS - 1) / MSS);
    if (p->snd_queuelen + segs > TCP_SND_QUEUELEN || segs_in_use + segs > MEMP_NUM_TCP_SEG) {
        return Err::MEM;
    }
    size_t done = 0;
    while (done < len) {
        const ssize_t n = send(p->fd, data + done, len - done, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            done += static_cast<size_t>(n);
        } else if (n < 0 && errno == EAGAIN) {
            pollfd w = {p->fd, POLLOUT, 0};
            poll(&w, 1, 10); // never past 1072 bytes queued: the host buffer takes them
        } else {
            return Err::CONN; // the peer is gone; input will report it
        }
    }
    p->written += len;
    p->unacked.push_back({p->written, segs, host::now_us()});
    p->snd_buf -= static_cast<uint32_t>(len);
    p->snd_queuelen += segs;
    segs_in_use += segs;
    return Err::OK;
}

void recved(Pcb *p, size_t len) {
    if (p != nullptr && p->used) {
        p->rcv_wnd = static_cast<uint32_t>(std::min<size_t>(TCP_WND, p->rcv_wnd + len));
        host::progress();
    }
}

void close(Pcb *p) {
    if (p == nullptr || !p->used) {
        return;
    }
    p->ctx = nullptr;
    p->rx_closed = true;
    // tcp_close_shutdown (tcp.c:348-380): data received but never taken means a RST.
    if ((p->state == ESTABLISHED || p->state == CLOSE_WAIT) && p->rcv_wnd != TCP_WND) {
        release(*p, true);
        return;
    }
    switch (p->state) {
    case ESTABLISHED: p->state = FIN_WAIT_1; break;
    case CLOSE_WAIT: p->state = LAST_ACK; break;
    default: return; // already closing
    }
    shutdown(p->fd, SHUT_WR);
    p->fin_queued = true;
    p->fin_at_us = host::now_us();
    host::progress();
}

void abort(Pcb *p) {
    if (p != nullptr && p->used) {
        p->ctx = nullptr;
        release(*p, p->state != TIME_WAIT);
    }
}

void set_nodelay(Pcb *p, bool on) {
    if (p != nullptr && p->fd >= 0) {
        set_int(p->fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
    }
}

bool nodelay(const Pcb *p) {
    int v = 0;
    socklen_t len = sizeof v;
    return p != nullptr && p->fd >= 0 &&
           getsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 && v != 0;
}

void keepalive(Pcb *p, uint32_t idle_ms, uint32_t intvl_ms, uint32_t count) {
    if (p == nullptr || p->fd < 0) {
        return;
    }
    const bool on = idle_ms != 0 && intvl_ms != 0 && count != 0;
    set_int(p->fd, SOL_SOCKET, SO_KEEPALIVE, on ? 1 : 0);
    if (on) {
        // The host counts in whole seconds; lwIP in milliseconds (ClientContext.h:381-391).
        set_int(p->fd, IPPROTO_TCP, TCP_KEEPIDLE, static_cast<int>((idle_ms + 999) / 1000));
        set_int(p->fd, IPPROTO_TCP, TCP_KEEPINTVL, static_cast<int>((intvl_ms + 999) / 1000));
        set_int(p->fd, IPPROTO_TCP, TCP_KEEPCNT, static_cast<int>(count));
    }
}

bool keepalive_enabled(const Pcb *p) {
    int v = 0;
    socklen_t len = sizeof v;
    return p != nullptr && p->fd >= 0 &&
           getsockopt(p->fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len) == 0 && v != 0;
}

} // namespace lwip

namespace host {

void tcp_input() {
    using namespace lwip;
    // Connections first: what reached them came before any SYN the listeners hold now, and
    // lwIP takes segments in the order they arrive (a FIN that makes a TIME_WAIT PCB comes
    // before the SYN that recycles it).
    for (Pcb &p : pcbs) {
        if (!p.used) {
            continue;
        }
        if (p.fd >= 0) {
            check_acks(p);
        }
        if (p.used && p.fd >= 0) {
            if (can_receive(p)) {
                receive(p);
            } else {
                watch_reset(p);
            }
        }
        if (p.used) {
            timers(p);
        }
    }
    if (!netif_up()) {
        return;
    }
    for (Listener &l : listeners) {
        // tcp_listen_input drops a SYN while the backlog is full (tcp_in.c:654-658).
        while (l.used && l.accepts_pending < l.backlog && (host::ready(id(l)) & EPOLLIN)) {
            l.deferring = false;
            if (!take_connection(l)) {
                host::drained(id(l), EPOLLIN);
            }
        }
        if (l.used && l.accepts_pending >= l.backlog && !l.deferring) {
            pollfd p = {l.fd, POLLIN, 0};
            if (poll(&p, 1, 0) > 0) {
                l.deferring = true;
                count(SYN_DEFERRED);
            }
        }
    }
}

void tcp_arm(uint64_t &wake_ns) {
    using namespace lwip;
    for (Listener &l : listeners) {
        if (l.used) {
            const bool open = netif_up() && l.accepts_pending < l.backlog;
            watch(id(l), l.fd, open ? uint32_t{EPOLLIN} : 0u);
        }
    }
    const uint64_t now = now_us();
    for (Pcb &p : pcbs) {
        if (!p.used) {
            continue;
        }
        if (p.fd >= 0 && can_receive(p)) {
            // No EPOLLIN while the window is shut, or the waiting bytes would wake us forever;
            // a reset still shows as EPOLLERR.
            watch(id(p), p.fd, p.rcv_wnd > 0 || p.rx_closed ? uint32_t{EPOLLIN} : 0u);
        } else if (p.fd >= 0 && p.state == CLOSE_WAIT) {
            watch(id(p), p.fd, 0);
        } else {
            unwatch(id(p));
        }
        // Acknowledgements have no event: look again once the round trip allows one, then
        // every millisecond while the kernel still holds the data.
        if (!p.unacked.empty() || p.fin_queued) {
            const uint64_t first = p.unacked.empty() ? p.fin_at_us : p.unacked.front().at_us;
            const uint64_t due = first + config().rtt_us;
            wake_ns = std::min(wake_ns, 1000 * (due > now ? due : now + 1000));
        }
        if (p.state == FIN_WAIT_2 || p.state == TIME_WAIT) {
            const uint64_t limit = p.state == TIME_WAIT ? 2 * TCP_MSL_MS : TCP_FIN_WAIT_TIMEOUT_MS;
            wake_ns = std::min(wake_ns, (p.tmr_ms + limit + 1) * 1000000);
        }
    }
}

} // namespace host
