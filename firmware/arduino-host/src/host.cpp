// host.cpp - the virtual board's link, the clock, the system task, and the sketch's waits.
#include "host.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <string>

#include "Arduino.h"

namespace host {
namespace {

Config cfg;
Page *shared = nullptr;
uint64_t boot_ns = 0;
uint64_t resume_us = 0;
uint64_t epoch = 0;
uint64_t last_yield_epoch = 0;
bool looping = false;
int epoll_fd = -1;

const char *const NAMES[COUNTERS] = {
    "wait_peek",    "wait_read",  "wait_write", "wait_flush",   "wait_delay",   "wait_serial",
    "blocked_ms",   "uart_overruns", "uart_lost", "pcb_resets", "pcb_recycled", "syn_deferred",
};

uint64_t mono_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

const char *env(const char *name) {
    const char *v = getenv(name);
    if (v == nullptr) {
        fatal("%s is not set: this program is the relay firmware's host build, which the "
              "virtual board runs",
              name);
    }
    return v;
}

// Credentials travel in hex so that any SSID byte survives the environment.
const char *unhex(const char *name) {
    const char *h = env(name);
    const size_t n = strlen(h);
    if (n % 2 != 0) {
        fatal("%s is not hex", name);
    }
    std::string *out = new std::string(); // lives as long as the process
    for (size_t i = 0; i < n; i += 2) {
        char pair[3] = {h[i], h[i + 1], 0};
        char *end = nullptr;
        const long v = strtol(pair, &end, 16);
        if (*end != 0) {
            fatal("%s is not hex", name);
        }
        out->push_back(static_cast<char>(v));
    }
    return out->c_str();
}

uint64_t number(const char *name) {
    char *end = nullptr;
    const char *v = env(name);
    const unsigned long long n = strtoull(v, &end, 10);
    if (*v == 0 || *end != 0) {
        fatal("%s must be a number, not `%s`", name, v);
    }
    return n;
}

// A short time slice (EEVDF, Linux 6.12 and later: sched_attr.sched_runtime of a normal task):
// the firmware waits less behind other processes after its board wakes, as a chip's loop
// never waits at all. An older kernel ignores or refuses it, and that is fine.
void short_slices() {
    struct {
        uint32_t size, policy;
        uint64_t flags;
        int32_t nice;
        uint32_t priority;
        uint64_t runtime, deadline, period;
    } attr = {};
    attr.size = sizeof attr;
    attr.runtime = 100000; // ns
    (void)!syscall(SYS_sched_setattr, 0, &attr, 0);
}

} // namespace

void init() {
    boot_ns = mono_ns();
    resume_us = 0;
    signal(SIGPIPE, SIG_IGN); // a closed socket is an error to handle, as lwIP reports it
    // Wake-ups are timed to a byte on the wire (3.25 us at 3 Mbaud): no 50 us default slack.
    prctl(PR_SET_TIMERSLACK, 1);
    short_slices();
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0) {
        fatal("cannot create an epoll set: %s", strerror(errno));
    }
    const char *ip = env("ARDUINO_HOST_IP");
    unsigned a, b, c, d;
    char extra;
    if (sscanf(ip, "%u.%u.%u.%u%c", &a, &b, &c, &d, &extra) != 4 || a > 255 || b > 255 ||
        c > 255 || d > 255) {
        fatal("ARDUINO_HOST_IP `%s` is not an IPv4 address", ip);
    }
    cfg.ip = a | b << 8 | c << 16 | d << 24;
    cfg.ssid = unhex("ARDUINO_HOST_SSID");
    cfg.psk = unhex("ARDUINO_HOST_PSK");
    cfg.paced = number("ARDUINO_HOST_PACED") != 0;
    cfg.rtt_us = number("ARDUINO_HOST_RTT_US");

    void *p = mmap(nullptr, sizeof(Page), PROT_READ | PROT_WRITE, MAP_SHARED, PAGE_FD, 0);
    if (p == MAP_FAILED) {
        fatal("cannot map the board's page (fd %d): %s", PAGE_FD, strerror(errno));
    }
    shared = static_cast<Page *>(p);
    std::string names;
    for (unsigned i = 0; i < COUNTERS; i++) {
        names += (i ? " " : "");
        names += NAMES[i];
    }
    memcpy(shared->names, names.c_str(), names.size() + 1);
    shared->counters = COUNTERS;
    std::atomic_thread_fence(std::memory_order_release);
    shared->magic = PAGE_MAGIC;

    struct stat st;
    if (fstat(FLASH_FD, &st) != 0) {
        fatal("no flash (fd %d): %s", FLASH_FD, strerror(errno));
    }
    cfg.flash_size = static_cast<uint64_t>(st.st_size);
}

const Config &config() { return cfg; }
Page &page() { return *shared; }

void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("firmware: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    _exit(70);
}

uint64_t now_ns() { return mono_ns() - boot_ns; }

void count(Counter c, uint64_t n) {
    if (shared != nullptr) {
        shared->value[c].fetch_add(n, std::memory_order_relaxed);
    }
}

void progress() { epoch++; }
uint64_t progress_epoch() { return epoch; }

namespace {

struct Armed {
    int fd = -1;
    uint32_t events = 0;
};
Armed armed[WATCHES];
uint32_t ready_now[WATCHES] = {};

// Arms every module's descriptors and takes what is ready within `max_ns` (0: what is ready
// now). Ready bits add up until a module clears them.
void look(uint64_t max_ns) {
    uint64_t wake = now_ns() + max_ns;
    uart_arm(wake);
    tcp_arm(wake);
    const uint64_t now = now_ns();
    const uint64_t left = wake > now ? wake - now : 0;
    const timespec ts = {static_cast<time_t>(left / 1000000000u),
                         static_cast<long>(left % 1000000000u)};
    epoll_event ev[WATCHES];
    const int n = epoll_pwait2(epoll_fd, ev, WATCHES, &ts, nullptr);
    for (int i = 0; i < n; i++) {
        ready_now[ev[i].data.u32] |= ev[i].events;
    }
}

} // namespace

void watch(uint32_t id, int fd, uint32_t events) {
    Armed &a = armed[id];
    if (a.fd == fd && a.events == events) {
        return;
    }
    epoll_event ev = {};
    ev.events = events;
    ev.data.u32 = id;
    if (a.fd != fd) {
        unwatch(id);
    }
    if (epoll_ctl(epoll_fd, a.fd == fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0) {
        fatal("cannot watch descriptor %d: %s", fd, strerror(errno));
    }
    a = {fd, events};
}

void unwatch(uint32_t id) {
    Armed &a = armed[id];
    if (a.fd >= 0) {
        epoll_ctl(epoll_fd, EPOLL_CTL_DEL, a.fd, nullptr);
    }
    a = {};
    ready_now[id] = 0;
}

uint32_t ready(uint32_t id) { return ready_now[id]; }
void drained(uint32_t id, uint32_t events) { ready_now[id] &= ~events; }

void system_task() {
    look(0);
    uart_isr();
    tcp_input();
    resume_us = now_us();
}

uint64_t resumed_us() { return resume_us; }

void yield_once() {
    system_task();
    if (epoch == last_yield_epoch) {
        idle(1000);
        system_task();
    }
    last_yield_epoch = epoch;
}

void idle_ns(uint64_t max_ns) { look(max_ns); }

bool in_loop() { return looping; }
void set_in_loop(bool in) { looping = in; }

void Blocking::waiting() {
    if (!counted_ && looping) {
        counted_ = true;
        since_ = now_us();
        count(kind_);
    }
}

Blocking::~Blocking() {
    if (counted_) {
        count(BLOCKED_MS, (now_us() - since_ + 999) / 1000);
    }
}

} // namespace host

// ---- the Arduino clock and scheduling API ----

unsigned long millis() { return host::now_ms(); }
unsigned long micros() { return static_cast<uint32_t>(host::now_us()); }

void delay(unsigned long ms) {
    // esp_delay(ms): the sketch is suspended for ms while the system task runs
    // (core_esp8266_wiring.cpp:36-40, core_esp8266_main.cpp:152-164).
    host::Blocking wait(host::WAIT_DELAY);
    if (ms > 0) {
        wait.waiting();
    }
    const uint64_t until = host::now_us() + static_cast<uint64_t>(ms) * 1000;
    host::system_task();
    while (host::now_us() < until) {
        host::idle(until - host::now_us());
        host::system_task();
    }
}

extern "C" void yield(void) { host::yield_once(); }

extern "C" void optimistic_yield(uint32_t interval_us) {
    // core_esp8266_main.cpp:200-211: yields only once interval_us passed since the last resume.
    if (host::now_us() - host::resumed_us() > interval_us) {
        yield();
    }
}
