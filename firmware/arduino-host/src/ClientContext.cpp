// ClientContext.cpp - a connection's received pbufs and the waits of write() and flush(), as
// libraries/ESP8266WiFi/src/include/ClientContext.h does them (line numbers below).
#include "ClientContext.h"

#include <string.h>

#include <algorithm>

#include "ESP8266WiFi.h"
#include "host.h"

ClientContext::ClientContext(lwip::Pcb *pcb) : _pcb(pcb) {
    pcb->prio = lwip::TCP_PRIO_MIN; // tcp_setprio(_pcb, TCP_PRIO_MIN): line 42
    pcb->ctx = this;                // tcp_arg and the callbacks: lines 43-47
}

void ClientContext::unref() {
    if (--_refcnt == 0) { // lines 115-127
        discard_received();
        close();
        delete this;
    }
}

int ClientContext::close() {
    if (_pcb != nullptr) { // lines 73-92
        lwip::close(_pcb);
        _pcb = nullptr;
    }
    return 0;
}

int ClientContext::abort() {
    if (_pcb != nullptr) { // lines 58-71
        lwip::abort(_pcb);
        _pcb = nullptr;
    }
    return -13; // ERR_ABRT
}

size_t ClientContext::availableForWrite() const { return _pcb ? _pcb->snd_buf : 0; }

void ClientContext::setNoDelay(bool nodelay) {
    if (_pcb != nullptr) {
        lwip::set_nodelay(_pcb, nodelay);
    }
}

bool ClientContext::getNoDelay() const { return lwip::nodelay(_pcb); }

size_t ClientContext::getSize() const {
    size_t n = 0;
    for (const auto &p : _rx) {
        n += p.size();
    }
    return n - _rx_offset;
}

int ClientContext::read() {
    if (_rx.empty()) {
        return 0;
    }
    const uint8_t c = _rx.front()[_rx_offset];
    _consume(1);
    return c;
}

size_t ClientContext::read(char *dst, size_t size) {
    // lines 252-274: across pbufs, one _consume each.
    size = std::min(size, getSize());
    size_t done = 0;
    while (done < size) {
        const auto &head = _rx.front();
        const size_t n = std::min(size - done, head.size() - _rx_offset);
        memcpy(dst + done, head.data() + _rx_offset, n);
        done += n;
        _consume(n);
    }
    return done;
}

int ClientContext::peek() const { return _rx.empty() ? 0 : _rx.front()[_rx_offset]; }

size_t ClientContext::peekBytes(char *dst, size_t size) const {
    // lines 285-300: at most what the first pbuf holds.
    if (_rx.empty()) {
        return 0;
    }
    const size_t n = std::min({size, getSize(), _rx.front().size() - _rx_offset});
    memcpy(dst, _rx.front().data() + _rx_offset, n);
    return n;
}

void ClientContext::discard_received() {
    if (_rx.empty()) { // lines 302-314
        return;
    }
    if (_pcb != nullptr) {
        lwip::recved(_pcb, getSize());
    }
    _rx.clear();
    _rx_offset = 0;
}

bool ClientContext::wait_until_acked(uint32_t max_wait_ms) {
    // lines 316-361: until the send buffer is whole again, the connection leaves ESTABLISHED,
    // or nothing was acknowledged for max_wait_ms.
    if (_pcb == nullptr) {
        return true;
    }
    host::Blocking wait(host::WAIT_FLUSH);
    int prev = -1;
    uint32_t last_sent = millis();
    for (bool first = true;; first = false) {
        if (!first) {
            wait.waiting(); // a second look means the peer had not acknowledged everything
        }
        if (millis() - last_sent > max_wait_ms) {
            return false;
        }
        const int sndbuf = static_cast<int>(availableForWrite());
        if (sndbuf != prev) {
            prev = sndbuf;
            last_sent = millis();
        }
        yield(); // esp_yield()
        if (state() != ESTABLISHED || sndbuf == static_cast<int>(lwip::TCP_SND_BUF)) {
            return true;
        }
    }
}

uint8_t ClientContext::state() const {
    // lines 363-371: nothing more can be written once the peer closed.
    const int s = lwip::state(_pcb);
    if (_pcb == nullptr || s == CLOSE_WAIT || s == CLOSING) {
        return CLOSED;
    }
    return static_cast<uint8_t>(s);
}

size_t ClientContext::_write_some(const uint8_t *data, size_t len) {
    // lines 497-552: chunks as big as the send buffer allows, until tcp_write says ERR_MEM.
    size_t written = 0;
    while (written < len) {
        if (state() == CLOSED) {
            break;
        }
        const size_t chunk = std::min<size_t>(availableForWrite(), len - written);
        if (chunk == 0 || lwip::write(_pcb, data + written, chunk) != lwip::Err::OK) {
            break;
        }
        written += chunk;
        host::progress();
    }
    return written;
}

size_t ClientContext::write(const uint8_t *data, size_t len) {
    if (_pcb == nullptr) {
        return 0;
    }
    // _write_from_source, lines 463-495: what does not fit waits for an ACK (or the 500 ms
    // poll) and is tried again, until the timeout runs out with no progress.
    host::Blocking wait(host::WAIT_WRITE);
    size_t written = 0;
    uint32_t op_start = millis();
    for (;;) {
        const size_t n = _write_some(data + written, len - written);
        written += n;
        if (n > 0) {
            op_start = millis();
        }
        if (written == len || millis() - op_start > _timeout_ms || state() == CLOSED) {
            return written;
        }
        wait.waiting();
        const uint64_t acked = _pcb->acked;
        const uint32_t poll_at = millis() + lwip::TCP_SLOW_INTERVAL_MS;
        while (_pcb != nullptr && _pcb->acked == acked &&
               static_cast<int32_t>(millis() - poll_at) < 0 &&
               millis() - op_start <= _timeout_ms) {
            host::idle(1000);
            host::system_task();
        }
        if (_pcb == nullptr) {
            return written;
        }
    }
}

void ClientContext::keepAlive(uint16_t idle_sec, uint16_t intv_sec, uint8_t count) {
    if (_pcb == nullptr) {
        // lines 381-391 use _pcb unchecked: on the chip this is a crash.
        host::fatal("WiFiClient::keepAlive on a closed connection dereferences a null PCB");
    }
    lwip::keepalive(_pcb, 1000u * idle_sec, 1000u * intv_sec, count);
}

bool ClientContext::isKeepAliveEnabled() const {
    if (_pcb == nullptr) {
        host::fatal("WiFiClient::isKeepAliveEnabled on a closed connection dereferences a null PCB");
    }
    return lwip::keepalive_enabled(_pcb);
}

const char *ClientContext::peekBuffer() {
    return _rx.empty() ? nullptr : reinterpret_cast<const char *>(_rx.front().data() + _rx_offset);
}

size_t ClientContext::peekAvailable() { return _rx.empty() ? 0 : _rx.front().size() - _rx_offset; }

void ClientContext::peekConsume(size_t consume) { _consume(consume); }

void ClientContext::_consume(size_t size) {
    // lines 572-592: within the first pbuf; the window reopens by what was taken.
    if (_rx.empty()) {
        return;
    }
    if (_rx.front().size() > _rx_offset + size) {
        _rx_offset += size;
    } else {
        _rx.pop_front();
        _rx_offset = 0;
    }
    if (_pcb != nullptr) {
        lwip::recved(_pcb, size);
    }
    host::progress();
}

void ClientContext::on_recv(const uint8_t *data, size_t len) {
    // Each segment arrives as its own pbuf and is chained (lines 617-625).
    while (len > 0) {
        const size_t n = std::min<size_t>(len, lwip::MSS);
        _rx.emplace_back(data, data + n);
        data += n;
        len -= n;
    }
}

void ClientContext::on_fin() {
    // lines 598-614: with nothing left to read, the peer's FIN aborts the connection.
    if (getSize() == 0) {
        abort();
    }
}

void ClientContext::on_error() { _pcb = nullptr; } // lines 628-638
