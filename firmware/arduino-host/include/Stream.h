// Stream.h - Print, Stream and Client: the base classes of HardwareSerial and WiFiClient.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

class Print {
public:
    virtual ~Print() = default;
    virtual size_t write(uint8_t c) = 0;
    virtual size_t write(const uint8_t *buf, size_t size) {
        size_t n = 0;
        while (n < size && write(buf[n]) == 1) {
            n++;
        }
        return n;
    }
    size_t write(const char *s) { return write(reinterpret_cast<const uint8_t *>(s), strlen(s)); }
    size_t write(const char *buf, size_t size) {
        return write(reinterpret_cast<const uint8_t *>(buf), size);
    }
    virtual int availableForWrite() { return 0; }
};

class Stream : public Print {
public:
    virtual int available() = 0;
    virtual int read() = 0;
    virtual int peek() = 0;
    // How long the timed calls wait; 1000 ms unless a subclass says otherwise (Stream.h:52).
    void setTimeout(unsigned long timeout) { _timeout = timeout; }
    unsigned long getTimeout() const { return _timeout; }

    // The peek-buffer API (cores/esp8266/Stream.h): a view of buffered input, no copy.
    virtual bool hasPeekBufferAPI() const { return false; }
    virtual size_t peekAvailable() { return 0; }
    virtual const char *peekBuffer() { return nullptr; }
    virtual void peekConsume(size_t) {}

protected:
    unsigned long _timeout = 1000;
};

class Client : public Stream {
public:
    virtual uint8_t connected() = 0;
    virtual void stop() = 0;
    virtual operator bool() = 0;
};
