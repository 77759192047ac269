// uart.cpp - UART0: the receive FIFO and the ring its ISR fills, and the transmit FIFO that the
// virtual board drains onto the wire (cores/esp8266/uart.cpp of core 3.1.2).
#include <errno.h>
#include <string.h>
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

struct Rx {
    std::vector<uint8_t> ring; // holds size - 1 bytes (uart.cpp:149-181)
    size_t rpos = 0;
    size_t wpos = 0;
    uint8_t fifo[FIFO] = {};
    size_t fifo_len = 0;
    bool overrun = false;

    size_t ring_len() const {
        return wpos >= rpos ? wpos - rpos : wpos + ring.size() - rpos;
    }
    size_t ring_free() const { return ring.size() - 1 - ring_len(); }

    // uart_rx_copy_fifo_to_buffer_unsafe (uart.cpp:149-181): a full ring drops its oldest byte
    // for each new one (UART_DISCARD_NEWEST is not defined) and sets the overrun flag.
    void isr_copy() {
        for (size_t i = 0; i < fifo_len; i++) {
            const size_t next = (wpos + 1) % ring.size();
            if (next == rpos) {
                if (!overrun) {
                    overrun = true;
                    host::count(host::UART_OVERRUNS);
                }
                host::count(host::UART_LOST);
                rpos = (rpos + 1) % ring.size();
            }
            ring[wpos] = fifo[i];
            wpos = next;
        }
        fifo_len = 0;
    }

    void arrive(const uint8_t *data, size_t n) {
        for (size_t i = 0; i < n; i++) {
            fifo[fifo_len++] = data[i];
            if (fifo_len >= INTRIGG) {
                isr_copy();
            }
        }
    }

    // Bytes that can arrive without any loss: the FIFO drains into the ring 16 at a time.
    size_t lossless_room() const {
        const size_t batches = ring_free() / INTRIGG;
        return batches * INTRIGG + (INTRIGG - 1) - fifo_len;
    }
};

Rx rx;
bool begun = false;
uint64_t tx_sent = 0;

size_t tx_room() {
    const uint64_t drained = host::page().tx_drained.load(std::memory_order_acquire);
    return FIFO - static_cast<size_t>(tx_sent - drained);
}

// Hands bytes to the wire; the board reads them as fast as it drains the FIFO, so the socket
// never holds more than the FIFO's 128.
void tx_send(const uint8_t *data, size_t n) {
    while (n > 0) {
        const ssize_t w = send(host::UART_FD, data, n, MSG_DONTWAIT);
        if (w > 0) {
            data += w;
            n -= static_cast<size_t>(w);
            tx_sent += static_cast<uint64_t>(w);
        } else if (w < 0 && errno == EAGAIN) {
            pollfd p = {host::UART_FD, POLLOUT, 0};
            poll(&p, 1, 100);
        } else {
            host::fatal("the UART link to the board broke: %s", strerror(errno));
        }
    }
}

} // namespace

HardwareSerial Serial(0);

namespace host {

void uart_isr() {
    uint8_t buf[4096];
    for (;;) {
        // A paced line delivers bytes at its rate whether or not the ring has room: that is
        // how the chip overruns. An unpaced line is infinitely fast, so it may only deliver
        // what fits, or every burst would overrun.
        size_t want = sizeof buf;
        if (begun && !config().paced) {
            want = rx.lossless_room() < want ? rx.lossless_room() : want;
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
            return;
        }
        // Before Serial.begin() nothing takes bytes off the line.
        if (begun) {
            rx.arrive(buf, static_cast<size_t>(n));
            progress();
        }
        if (static_cast<size_t>(n) < want) {
            return;
        }
    }
}

void uart_poll(std::vector<pollfd> &fds) {
    if (!begun || config().paced || rx.lossless_room() > 0) {
        fds.push_back({UART_FD, POLLIN, 0});
    }
}

} // namespace host

HardwareSerial::HardwareSerial(int) {}

void HardwareSerial::begin(unsigned long) {
    end();
    rx.ring.assign(rx_size_, 0);
    rx.rpos = rx.wpos = rx.fifo_len = 0;
    rx.overrun = false;
    begun_ = begun = true;
}

void HardwareSerial::end() {
    begun_ = begun = false;
    rx.ring.clear();
}

size_t HardwareSerial::setRxBufferSize(size_t size) {
    if (size < 2) {
        return rx_size_;
    }
    if (begun_) {
        // uart_resize_rx_buffer (uart.cpp:373-397): what was waiting moves to the new ring.
        std::vector<uint8_t> kept;
        uint8_t b;
        while (kept.size() < size - 1 && read(&b, 1) == 1) {
            kept.push_back(b);
        }
        rx.ring.assign(size, 0);
        rx.rpos = 0;
        rx.wpos = kept.size();
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
    const int n = static_cast<int>(rx.ring_len() + rx.fifo_len);
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
    size_t got = 0;
    while (got < size && rx.ring_len() > 0) {
        buffer[got++] = rx.ring[rx.rpos];
        rx.rpos = (rx.rpos + 1) % rx.ring.size();
    }
    if (got < size && rx.ring_len() == 0) {
        size_t take = rx.fifo_len < size - got ? rx.fifo_len : size - got;
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
    if (!begun_ || rx.ring_len() + rx.fifo_len == 0) {
        return -1;
    }
    if (rx.ring_len() == 0) {
        rx.isr_copy(); // uart_peek_char_unsafe: the FIFO cannot be peeked, so it is copied
    }
    return rx.ring[rx.rpos];
}

int HardwareSerial::availableForWrite() { return begun_ ? static_cast<int>(tx_room()) : 0; }

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
        size_t room = tx_room();
        if (room == 0) {
            wait.waiting();
            optimistic_yield(10000);
            host::idle(1000);
            continue;
        }
        const size_t n = room < size - done ? room : size - done;
        tx_send(buffer + done, n);
        done += n;
        host::progress();
    }
    return size;
}

void HardwareSerial::flush() {
    if (!begun_) {
        return;
    }
    host::Blocking wait(host::WAIT_SERIAL);
    while (tx_room() < FIFO) {
        wait.waiting();
        host::idle(1000);
    }
}

bool HardwareSerial::hasOverrun() {
    const bool was = rx.overrun;
    rx.overrun = false;
    return was;
}
