// lwip.h - the TCP model: lwIP 2.1.3 as the ESP8266 core 3.1.2 builds it (lwip2-536-feat), on
// top of the host's sockets. The kernel carries the bytes; this model decides what lwIP would
// allow: PCB and segment pools, the send buffer, the receive window, the listen backlog, and
// which connection dies when a new one needs a PCB.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <deque>

class ClientContext;
class WiFiServer;

namespace lwip {

// TCP_MSS comes from the lwIP variant's flags, as on the chip: 536 for lwip2-536-feat, the one
// PlatformIO builds by default (tools/platformio-build.py:244-250). The rest is
// tools/sdk/lwip2/include/lwipopts.h.
// Captured here: the host's <netinet/tcp.h> defines a TCP_MSS of its own.
#ifndef TCP_MSS
#error "TCP_MSS is set by the build, as platformio-build.py sets it for the chip"
#endif
constexpr uint32_t MSS = TCP_MSS;
constexpr uint32_t TCP_WND = 4 * MSS;                                 // lwipopts.h:1251
constexpr uint32_t TCP_SND_BUF = 2 * MSS;                             // lwipopts.h:1326
constexpr uint32_t TCP_SND_QUEUELEN = (4 * TCP_SND_BUF + MSS - 1) / MSS; // :1334, = 8
constexpr int MEMP_NUM_TCP_PCB = 5;                                           // lwipopts.h:444
constexpr int MEMP_NUM_TCP_PCB_LISTEN = 2;                                    // lwipopts.h:452
constexpr uint32_t MEMP_NUM_TCP_SEG = 10;                                     // lwipopts.h:460
// lwip/priv/tcp_priv.h:120-137: the slow timer's tick, TIME_WAIT's 2*MSL, FIN_WAIT_2's limit.
constexpr uint32_t TCP_SLOW_INTERVAL_MS = 500;
constexpr uint32_t TCP_MSL_MS = 60000;
constexpr uint32_t TCP_FIN_WAIT_TIMEOUT_MS = 20000;
// lwip/tcpbase.h:76-78. New PCBs get NORMAL; ClientContext lowers accepted ones to MIN.
constexpr uint8_t TCP_PRIO_MIN = 1;
constexpr uint8_t TCP_PRIO_NORMAL = 64;
constexpr uint8_t TCP_PRIO_MAX = 127;

enum class Err { OK, MEM, CONN };

struct Sent {
    uint64_t end;  // stream offset just past this write
    uint32_t segs; // segments (one pbuf each) it took from the pools
    uint64_t at_us;
};

struct Listener;

struct Pcb {
    bool used = false;
    int state = 0; // tcp_state
    int fd = -1;   // the kernel's socket; -1 once the kernel keeps the rest (TIME_WAIT)
    uint8_t prio = TCP_PRIO_NORMAL;
    uint64_t order = 0;   // creation order: lwIP walks tcp_active_pcbs newest first
    uint64_t tmr_ms = 0;  // when the last segment arrived (pcb->tmr, in slow ticks there)
    Listener *listener = nullptr;
    bool backlog_pend = false; // TF_BACKLOGPEND
    bool rx_closed = false;    // TF_RXCLOSED: the application closed its side
    ClientContext *ctx = nullptr;
    uint32_t rcv_wnd = TCP_WND;
    uint32_t snd_buf = TCP_SND_BUF;
    uint32_t snd_queuelen = 0;
    uint64_t written = 0; // bytes handed to the kernel
    uint64_t acked = 0;   // of those, acknowledged in the model
    std::deque<Sent> unacked;
    bool fin_queued = false;
    uint64_t fin_at_us = 0;
};

struct Listener {
    bool used = false;
    int fd = -1;
    uint16_t port = 0;
    uint8_t backlog = 0;
    uint8_t accepts_pending = 0;
    WiFiServer *server = nullptr;
    bool deferring = false; // a connection waits in the host's queue for backlog room
};

// tcp_new + tcp_bind + tcp_listen_with_backlog (WiFiServer.cpp:62-89); null when the listen
// pool is empty or the port cannot be bound, as those calls fail on the chip.
Listener *listen(uint16_t port, uint8_t backlog, WiFiServer *server);
void listen_close(Listener *l);
// tcp_backlog_accepted (lwIP tcp.c:316-330).
void backlog_accepted(Pcb *p);

int state(const Pcb *p);
// tcp_write with TCP_WRITE_FLAG_COPY: all of `len` or nothing (lwIP tcp_out.c tcp_write).
Err write(Pcb *p, const uint8_t *data, size_t len);
// tcp_recved: the application took `len` bytes, so the window reopens.
void recved(Pcb *p, size_t len);
// tcp_close: FIN, or RST when received data was never taken (tcp.c:348-380).
void close(Pcb *p);
// tcp_abort: RST, the PCB is freed at once.
void abort(Pcb *p);
void set_nodelay(Pcb *p, bool nodelay);
bool nodelay(const Pcb *p);
void keepalive(Pcb *p, uint32_t idle_ms, uint32_t intvl_ms, uint32_t count);
bool keepalive_enabled(const Pcb *p);

} // namespace lwip
