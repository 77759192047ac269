// HardwareSerial.h - UART0 as the ESP8266 core drives it: a 128-byte hardware FIFO each way and
// a receive ring the ISR fills (cores/esp8266/HardwareSerial.{h,cpp}, uart.cpp).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "Stream.h"

class HardwareSerial : public Stream {
public:
    explicit HardwareSerial(int uart_nr);

    void begin(unsigned long baud);
    void end();
    // Resizes the receive ring (default 256 bytes, of which it holds size - 1).
    size_t setRxBufferSize(size_t size);
    size_t getRxBufferSize() const;

    // Bytes in the ring plus the hardware FIFO; 0 yields after 10 ms (HardwareSerial.cpp:104).
    int available() override;
    int read() override;
    int read(uint8_t *buffer, size_t size);
    int read(char *buffer, size_t size) { return read(reinterpret_cast<uint8_t *>(buffer), size); }
    int peek() override;
    // Free room in the 128-byte transmit FIFO (uart.cpp:555-561).
    int availableForWrite() override;
    // Spins while the FIFO is full (uart.cpp:510-551): a blocking wait when it is.
    size_t write(uint8_t c) override;
    size_t write(const uint8_t *buffer, size_t size) override;
    using Print::write;
    // Waits until the FIFO has drained.
    void flush();
    // True once after receive bytes were lost to a full ring (uart.cpp:918-928).
    bool hasOverrun();
    operator bool() const { return begun_; }

private:
    bool begun_ = false;
    size_t rx_size_ = 256;
};

extern HardwareSerial Serial;
