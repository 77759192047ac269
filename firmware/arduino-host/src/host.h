// host.h - the runtime under the layer: the virtual board's link, the clock, the system task
// that runs while the sketch yields, and the counters of what firmware must never do in loop().
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <atomic>

namespace host {

// What the layer counts. A blocking wait is counted only inside loop(): setup() may wait.
enum Counter : unsigned {
    WAIT_PEEK,          // WiFiClient::peekBytes waited for data
    WAIT_READ,          // a timed read waited for data
    WAIT_WRITE,         // WiFiClient::write waited for the stack to take the data
    WAIT_FLUSH,         // WiFiClient::flush/stop/abort waited for acknowledgements
    WAIT_DELAY,         // delay() in loop()
    WAIT_SERIAL,        // HardwareSerial::write/flush waited for the transmit FIFO
    BLOCKED_MS,         // time spent in all of those waits
    UART_OVERRUNS,      // times the receive ring overflowed (hasOverrun() would say true)
    UART_LOST,          // receive bytes lost to those overruns
    PCB_RESETS,         // connections lwIP reset to free a PCB for a new one (tcp_kill_prio)
    PCB_RECYCLED,       // TIME_WAIT, LAST_ACK or CLOSING PCBs freed early for a new one
    SYN_DEFERRED,       // connections held back because the listener's backlog was full
    COUNTERS
};

// The page the virtual board maps too (fd 4). The board reads the counters and names, and the
// rate the sketch set its UART to, which the wire's other end must match. Layout is fixed: the
// Rust side (`RawPage` in src/lib.rs) reads it at these offsets.
struct Page {
    uint64_t magic;                        // PAGE_MAGIC, once the firmware has filled names
    std::atomic<uint64_t> uart_baud;       // Serial.begin's rate; 0 while the UART is off
    uint64_t counters;                     // how many counters follow
    char names[512];                       // their names, space-separated
    std::atomic<uint64_t> value[32];
};
constexpr uint64_t PAGE_MAGIC = 0x3154534f48445241ull; // "ARDHOST1"
static_assert(sizeof(Page) <= 4096, "the page is one page");
static_assert(COUNTERS <= 32, "room for every counter");

// Fixed descriptors the virtual board hands the firmware process.
constexpr int UART_FD = 3;  // a stream socket: UART bytes both ways
constexpr int PAGE_FD = 4;  // the shared Page
constexpr int FLASH_FD = 5; // the board's flash, for the EEPROM sector

struct Config {
    uint32_t ip = 0;          // the board's address on its network, network order
    const char *ssid = "";    // the network it can join
    const char *psk = "";
    bool paced = false;       // UART bytes arrive at the line rate (overruns are possible)
    uint64_t rtt_us = 0;      // modelled WiFi round trip: the earliest an acknowledgement comes
    uint64_t flash_size = 0;
};

void init();
const Config &config();
Page &page();
[[noreturn]] void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

uint64_t now_ns();
inline uint64_t now_us() { return now_ns() / 1000; }
inline uint32_t now_ms() { return static_cast<uint32_t>(now_us() / 1000); }

void count(Counter c, uint64_t n = 1);

// Bytes moved or a connection changed: the loop is not idle.
void progress();
uint64_t progress_epoch();

// One pass of what the ESP8266 SDK runs between the sketch's turns: the UART ISR, lwIP input
// and timers. Marks the time the sketch resumes (optimistic_yield measures from it).
void system_task();
uint64_t resumed_us();

// yield(): the system task once; when nothing moved since the last one, sleep until an event
// or 1 ms, so a sketch that spins on yield() waits as the chip would without burning a core.
void yield_once();

// Sleeps until a descriptor the system task watches is ready, or `max_ns` passes.
void idle_ns(uint64_t max_ns);
inline void idle(uint64_t max_us) { idle_ns(max_us * 1000); }

bool in_loop();
void set_in_loop(bool in);

// One blocking wait of kind `c` if it lasts past its start: counts it once, and its duration.
class Blocking {
public:
    explicit Blocking(Counter c) : kind_(c) {}
    ~Blocking();
    // The wait really waits: count it (only in loop()).
    void waiting();

private:
    Counter kind_;
    bool counted_ = false;
    uint64_t since_ = 0;
};

// The descriptors the system task watches, in one epoll set: a pass asks the kernel once which
// are ready rather than trying each. Ids name them: the UART, a PCB, a listener.
constexpr uint32_t WATCH_UART = 0;
constexpr uint32_t WATCH_PCB = 1;       // + the PCB's index
constexpr uint32_t WATCH_LISTENER = 16; // + the listener's index
constexpr uint32_t WATCHES = 32;
// Arms `fd` under `id` for `events` (EPOLLERR and EPOLLHUP always come); an unchanged mask
// costs nothing.
void watch(uint32_t id, int fd, uint32_t events);
// Before its descriptor closes.
void unwatch(uint32_t id);
// What the last look found ready on `id`; a module clears what it has drained.
uint32_t ready(uint32_t id);
void drained(uint32_t id, uint32_t events);

// Modules arm their descriptors before every look, and lower `wake_ns` to the soonest time
// they need a pass even without an event; then their halves of the system task.
void uart_arm(uint64_t &wake_ns);
void uart_isr();
void tcp_arm(uint64_t &wake_ns);
void tcp_input();

} // namespace host
