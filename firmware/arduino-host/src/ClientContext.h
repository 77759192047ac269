// ClientContext.h - one TCP connection as the ESP8266 core's ClientContext holds it: the PCB,
// the received pbufs the sketch has not taken yet, and the waits of write and flush
// (libraries/ESP8266WiFi/src/include/ClientContext.h of core 3.1.2).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <deque>
#include <vector>

#include "lwip.h"

class ClientContext {
public:
    // Accepted connections drop to the lowest priority, so any new connection may reset them
    // when the PCB pool is empty (ClientContext.h:38-51).
    explicit ClientContext(lwip::Pcb *pcb);

    lwip::Pcb *getPCB() const { return _pcb; }
    void ref() { ++_refcnt; }
    // The last reference gone: unread data is taken (so no RST), then the PCB is closed with
    // no wait for acknowledgements (ClientContext.h:115-127).
    void unref();
    int close();
    int abort();

    size_t availableForWrite() const;
    void setNoDelay(bool nodelay);
    bool getNoDelay() const;
    void setTimeout(uint32_t ms) { _timeout_ms = ms; }

    size_t getSize() const;
    int read();
    size_t read(char *dst, size_t size);
    int peek() const;
    size_t peekBytes(char *dst, size_t size) const;
    void discard_received();
    bool wait_until_acked(uint32_t max_wait_ms);
    uint8_t state() const;
    size_t write(const uint8_t *data, size_t len);
    void keepAlive(uint16_t idle_sec, uint16_t intv_sec, uint8_t count);
    bool isKeepAliveEnabled() const;
    const char *peekBuffer();
    size_t peekAvailable();
    void peekConsume(size_t consume);

    ClientContext *next() const { return _next; }
    void next(ClientContext *n) { _next = n; }

    // lwIP's callbacks (tcp_recv, tcp_err).
    void on_recv(const uint8_t *data, size_t len);
    void on_fin();
    void on_error();

private:
    void _consume(size_t size);
    size_t _write_some(const uint8_t *data, size_t len);

    lwip::Pcb *_pcb;
    std::deque<std::vector<uint8_t>> _rx; // pbufs, one per received segment of up to lwip::MSS
    size_t _rx_offset = 0;
    uint32_t _timeout_ms = 5000;
    int _refcnt = 0;
    ClientContext *_next = nullptr;
};
