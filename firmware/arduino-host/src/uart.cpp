// uart.cpp - UART0: the receive FIFO and the ring its ISR fills, and the transmit FIFO that the
// wire drains at the baud rate's real divider (cores/esp8266/uart.cpp of core 3.1.2).
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "Arduino.h"
#include "host.h"

namespace {

// UART_TX_FIFO_SIZE (uart.h:111); the receive FIFO is as deep.
constexpr size_t FIFO = 128;
// The receive FIFO raises its interrupt once it holds this many bytes (uart.cpp:446-457); fewer
// wait in the FIFO, where available() and read() still find them.
constexpr size_t INTRIGG = 16;
// ESP8266_CLOCK (esp8266_peri.h:32): the UART's clock, whatever the CPU runs at.
constexpr uint64_t UART_CLOCK_HZ = 80000000;
// Unpaced, bytes the wire took but the board has not: past this much, the wire waits for it.
constexpr size_t UNPACED_BACKLOG = 16 * 1024;

struct Rx {
    std::vector<uint8_t> ring; // holds size - 1 bytes (uart.cpp:149-181)
    size_t rpos = 0;
    size_t len = 0;
    uint8_t fifo[FIFO] = {};
    size_t fifo_len = 0;
    bool overrun = false;

    size_t ring_free() const { return ring.size() - 1 - len; }

    // uart_rx_copy_fifo_to_buffer_unsafe (uart.cpp:149-181), for many bytes at once: a full
    // ring drops its oldest byte for each new one (UART_DISCARD_NEWEST is not defined) and
    // sets the overrun flag. Whatever the order, the last size - 1 bytes stay.
    void push(const uint8_t *data, size_t n) {
        const size_t cap = ring.size() - 1;
        size_t lost = 0;
        if (n > cap) {
            lost += n - cap;
            data += n - cap;
            n = cap;
        }
        if (len + n > cap) {
            const size_t drop = len + n - cap;
            rpos = (rpos + drop) % ring.size();
            len -= drop;
            lost += drop;
        }
        size_t at = (rpos + len) % ring.size();
        const size_t first = std::min(n, ring.size() - at);
        memcpy(&ring[at], data, first);
        memcpy(&ring[0], data + first, n - first);
        len += n;
        if (lost > 0) {
            if (!overrun) {
                overrun = true;
                host::count(host::UART_OVERRUNS);
            }
            host::count(host::UART_LOST, lost);
        }
    }

    void isr_copy() {
        push(fifo, fifo_len);
        fifo_len = 0;
    }

    // Bytes enter the FIFO; each time it reaches the threshold the ISR empties it into the
    // ring, so the ring takes whole batches and the FIFO keeps the remainder.
    void arrive(const uint8_t *data, size_t n) {
        const size_t batched = (fifo_len + n) / INTRIGG * INTRIGG;
        if (batched > 0) {
            const size_t from_data = batched - fifo_len;
            isr_copy();
            push(data, from_data);
            data += from_data;
            n -= from_data;
        }
        memcpy(fifo + fifo_len, data, n);
        fifo_len += n;
    }

    // Bytes that can arrive without any loss: the FIFO drains into the ring 16 at a time.
    size_t lossless_room() const {
        const size_t batches = ring_free() / INTRIGG;
        return batches * INTRIGG + (INTRIGG - 1) - fifo_len;
    }

    size_t take(uint8_t *out, size_t size) {
        const size_t n = std::min(size, len);
        const size_t first = std::min(n, ring.size() - rpos);
        memcpy(out, &ring[rpos], first);
        memcpy(out + first, &ring[0], n - first);
        rpos = (rpos + n) % ring.size();
        len -= n;
        return n;
    }
};

// The transmit side. Paced, the wire takes one byte per 10 bit times of the divider the baud
// rate gives (uart.cpp:600-607: USD = ESP8266_CLOCK / baud, truncated), so the chip runs a
// little fast of most nominal rates. A byte leaves the FIFO for the shift register as the one
// before it finishes. Unpaced, the wire takes every byte at once.
struct Tx {
    uint64_t baud = 0;         // the nominal rate Serial.begin asked for
    uint64_t byte_ns = 0;      // 0: unpaced
    uint64_t wire_free_ns = 0; // when the last byte handed to the FIFO has left the wire
    std::vector<uint8_t> out;  // bytes on their way to the board's end of the link
    size_t out_from = 0;

    size_t pending() const { return out.size() - out_from; }
    bool busy(uint64_t now) const { return byte_ns != 0 && wire_free_ns > now; }

    // Bytes in the FIFO: every byte not yet finished but the one in the shift register.
    size_t fifo(uint64_t now) const {
        if (!busy(now)) {
            return 0;
        }
        return static_cast<size_t>((wire_free_ns - now + byte_ns - 1) / byte_ns - 1);
    }

    // When the FIFO next loses a byte.
    uint64_t next_leave(uint64_t now) const {
        const uint64_t unsent = (wire_free_ns - now + byte_ns - 1) / byte_ns;
        return wire_free_ns - (unsent - 1) * byte_ns;
    }

    // What uart_tx_free reports (uart.cpp:555-561): the FIFO's size less what it holds.
    size_t free(uint64_t now) {
        if (byte_ns == 0) {
            flush_out();
            return pending() >= UNPACED_BACKLOG ? 0 : FIFO;
        }
        return FIFO - fifo(now);
    }

    // Bytes uart_write takes without waiting: it waits while the FIFO holds 127 or more
    // (uart_tx_fifo_full, uart.cpp:504-507), one short of what free() reports. An idle wire
    // takes the first byte straight into the shift register.
    size_t accept(uint64_t now) {
        if (byte_ns == 0) {
            return free(now);
        }
        return busy(now) ? FIFO - 1 - std::min(fifo(now), FIFO - 1) : FIFO;
    }

    void put(const uint8_t *data, size_t n, uint64_t now) {
        if (byte_ns != 0) {
            wire_free_ns = std::max(wire_free_ns, now) + n * byte_ns;
        }
        out.insert(out.end(), data, data + n);
    }

    // Hands what waits to the board; a full link keeps the rest for later.
    void flush_out() {
        while (pending() > 0) {
            const ssize_t w = send(host::UART_FD, out.data() + out_from, pending(), MSG_DONTWAIT);
            if (w > 0) {
                out_from += static_cast<size_t>(w);
            } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                break;
            } else {
                host::fatal("the UART link to the board broke: %s", strerror(errno));
            }
        }
        if (out_from == out.size()) {
            out.clear();
            out_from = 0;
        }
    }
};

Rx rx;
Tx tx;
bool begun = false;

} // namespace

HardwareSerial Serial(0);

namespace host {

void uart_isr() {
    tx.flush_out();
    if ((ready(WATCH_UART) & (EPOLLIN | EPOLLERR | EPOLLHUP)) == 0) {
        return;
    }
    uint8_t buf[16384];
    for (;;) {
        // A paced line delivers bytes at its rate whether or not the ring has room: that is
        // how the chip overruns. An unpaced line is infinitely fast, so it may only deliver
        // what fits, or every burst would overrun.
        size_t want = sizeof buf;
        if (begun && !config().paced) {
            want = std::min(rx.lossless_room(), want);
            if (want == 0) {
                return;
            }
        }
        const ssize_t n = recv(UART_FD, buf, want, MSG_DONTWAIT);
        if (n == 0) {
            _exit(0); // the board is gone: so is the chip
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                fatal("the UART link to the board broke: %s", strerror(errno));
            }
            drained(WATCH_UART, EPOLLIN);
            return;
        }
        // Before Serial.begin() nothing takes bytes off the line.
        if (begun) {
            rx.arrive(buf, static_cast<size_t>(n));
            progress();
        }
        if (static_cast<size_t>(n) < want) {
            drained(WATCH_UART, EPOLLIN);
            return;
        }
    }
}

void uart_arm(uint64_t &wake_ns) {
    uint32_t events = 0;
    if (!begun || config().paced || rx.lossless_room() > 0) {
        events |= EPOLLIN;
    }
    if (tx.pending() > 0) {
        events |= EPOLLOUT;
    }
    watch(WATCH_UART, UART_FD, events);
    // A loop with more to send must run again before the FIFO runs dry, as the chip's loop,
    // which never sleeps, would: each time another quarter of it has drained, and as it empties.
    // A quarter at 3 Mbaud is 104 us, longer than a loaded host takes to wake.
    const uint64_t now = now_ns();
    if (tx.busy(now)) {
        for (uint64_t left : {FIFO * 3 / 4 + 1, FIFO / 2 + 1, FIFO / 4 + 1, uint64_t{1}}) {
            const uint64_t at = tx.wire_free_ns - std::min(tx.wire_free_ns, left * tx.byte_ns);
            if (at > now) {
                wake_ns = std::min(wake_ns, at);
                break;
            }
        }
    }
}

} // namespace host

HardwareSerial::HardwareSerial(int) {}

void HardwareSerial::begin(unsigned long baud) {
    end();
    rx.ring.assign(rx_size_, 0);
    rx.rpos = rx.len = rx.fifo_len = 0;
    rx.overrun = false;
    const uint64_t div = std::max<uint64_t>(1, UART_CLOCK_HZ / std::max<unsigned long>(baud, 1));
    // 10 bit times of div / 80 MHz each: div * 125 ns, exactly.
    tx.baud = std::max<unsigned long>(baud, 1);
    tx.byte_ns = host::config().paced ? div * 125 : 0;
    tx.wire_free_ns = 0;
    host::page().uart_baud.store(baud, std::memory_order_release);
    begun_ = begun = true;
}

void HardwareSerial::end() {
    begun_ = begun = false;
    rx.ring.clear();
    host::page().uart_baud.store(0, std::memory_order_release);
}

size_t HardwareSerial::setRxBufferSize(size_t size) {
    if (size < 2) {
        return rx_size_;
    }
    if (begun_) {
        // uart_resize_rx_buffer (uart.cpp:373-397): what was waiting moves to the new ring.
        std::vector<uint8_t> kept(std::min(rx.len, size - 1));
        rx.take(kept.data(), kept.size());
        rx.ring.assign(size, 0);
        rx.rpos = 0;
        rx.len = kept.size();
        memcpy(rx.ring.data(), kept.data(), kept.size());
    }
    rx_size_ = size;
    return rx_size_;
}

size_t HardwareSerial::getRxBufferSize() const { return begun_ ? rx.ring.size() : 0; }

int HardwareSerial::available() {
    if (!begun_) {
        return 0;
    }
    const int n = static_cast<int>(rx.len + rx.fifo_len);
    if (n == 0) {
        optimistic_yield(10000);
    }
    return n;
}

int HardwareSerial::read(uint8_t *buffer, size_t size) {
    if (!begun_) {
        return 0;
    }
    // uart_read (uart.cpp:288-321): the ring first, then straight from the FIFO.
    size_t got = rx.take(buffer, size);
    if (got < size && rx.len == 0) {
        const size_t take = std::min(rx.fifo_len, size - got);
        memcpy(buffer + got, rx.fifo, take);
        memmove(rx.fifo, rx.fifo + take, rx.fifo_len - take);
        rx.fifo_len -= take;
        got += take;
    }
    if (got > 0) {
        host::progress();
    }
    return static_cast<int>(got);
}

int HardwareSerial::read() {
    uint8_t c;
    return read(&c, 1) == 1 ? c : -1;
}

int HardwareSerial::peek() {
    if (!begun_ || rx.len + rx.fifo_len == 0) {
        return -1;
    }
    if (rx.len == 0) {
        rx.isr_copy(); // uart_peek_char_unsafe: the FIFO cannot be peeked, so it is copied
    }
    return rx.ring[rx.rpos];
}

int HardwareSerial::availableForWrite() {
    return begun_ ? static_cast<int>(tx.free(host::now_ns())) : 0;
}

size_t HardwareSerial::write(uint8_t c) { return write(&c, 1); }

size_t HardwareSerial::write(const uint8_t *buffer, size_t size) {
    if (!begun_) {
        return 0;
    }
    // uart_write (uart.cpp:533-551): each byte waits for FIFO room, with an optimistic_yield
    // of 10 ms between bytes.
    host::Blocking wait(host::WAIT_SERIAL);
    size_t done = 0;
    while (done < size) {
        const uint64_t now = host::now_ns();
        const size_t room = tx.accept(now);
        if (room == 0) {
            wait.waiting();
            optimistic_yield(10000);
            host::idle_ns(tx.byte_ns != 0 ? tx.next_leave(host::now_ns()) - host::now_ns()
                                          : 1000000);
            continue;
        }
        const size_t n = std::min(room, size - done);
        tx.put(buffer + done, n, now);
        done += n;
        host::progress();
    }
    // The wire carries bytes while the sketch runs on, yields or not.
    tx.flush_out();
    return size;
}

// HardwareSerial::flush (HardwareSerial.cpp:114-126): uart_wait_tx_empty until the FIFO is
// empty (uart.cpp:564-571), then a busy delay of one 8N1 character at the nominal rate for the
// shift register's last byte.
void HardwareSerial::flush() {
    if (!begun_) {
        return;
    }
    host::Blocking wait(host::WAIT_SERIAL);
    tx.flush_out();
    for (uint64_t now = host::now_ns(); tx.fifo(now) > 0 || tx.pending() > 0;
         now = host::now_ns()) {
        wait.waiting();
        host::idle_ns(tx.fifo(now) > 0 ? tx.wire_free_ns - tx.byte_ns - now : 1000000);
        tx.flush_out();
    }
    if (tx.byte_ns != 0) {
        wait.waiting();
        const uint64_t until = host::now_ns() + 1000 * (10 * 1000000 / tx.baud + 1);
        while (host::now_ns() < until) {
        }
    }
}

bool HardwareSerial::hasOverrun() {
    const bool was = rx.overrun;
    rx.overrun = false;
    return was;
}
