// ESP8266WiFi.h - station WiFi, WiFiServer and WiFiClient with the semantics of the ESP8266
// core 3.1.2 on its lwIP 2.1.3 build (libraries/ESP8266WiFi/src). See README.md for what each
// call waits for and which lwIP limits apply.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "Arduino.h"

// wl_definitions.h:50-60
typedef enum {
    WL_NO_SHIELD = 255,
    WL_IDLE_STATUS = 0,
    WL_NO_SSID_AVAIL = 1,
    WL_SCAN_COMPLETED = 2,
    WL_CONNECTED = 3,
    WL_CONNECT_FAILED = 4,
    WL_CONNECTION_LOST = 5,
    WL_WRONG_PASSWORD = 6,
    WL_DISCONNECTED = 7
} wl_status_t;

// ESP8266WiFiType.h
typedef enum WiFiMode { WIFI_OFF = 0, WIFI_STA = 1, WIFI_AP = 2, WIFI_AP_STA = 3 } WiFiMode_t;
typedef enum WiFiSleepType {
    WIFI_NONE_SLEEP = 0,
    WIFI_LIGHT_SLEEP = 1,
    WIFI_MODEM_SLEEP = 2
} WiFiSleepType_t;

// lwIP's TCP states (lwip/tcpbase.h), as WiFiClient::status() reports them.
enum tcp_state {
    CLOSED = 0,
    LISTEN = 1,
    SYN_SENT = 2,
    SYN_RCVD = 3,
    ESTABLISHED = 4,
    FIN_WAIT_1 = 5,
    FIN_WAIT_2 = 6,
    CLOSE_WAIT = 7,
    CLOSING = 8,
    LAST_ACK = 9,
    TIME_WAIT = 10
};
using wl_tcp_state = tcp_state; // wl_definitions.h:72-74

// WiFiClient.h:36-40
#define WIFICLIENT_MAX_FLUSH_WAIT_MS 300
#define TCP_DEFAULT_KEEPALIVE_IDLE_SEC 7200
#define TCP_DEFAULT_KEEPALIVE_INTERVAL_SEC 75
#define TCP_DEFAULT_KEEPALIVE_COUNT 9

class ESP8266WiFiClass {
public:
    static void persistent(bool persistent);
    bool mode(WiFiMode_t mode);
    WiFiMode_t getMode() const { return mode_; }
    bool setSleepMode(WiFiSleepType_t type, uint8_t listen_interval = 0);
    WiFiSleepType_t getSleepMode() const { return sleep_; }
    bool setAutoReconnect(bool auto_reconnect);
    // Joins only the network the virtual board offers; anything else fails as the chip does.
    wl_status_t begin(const char *ssid, const char *passphrase = nullptr, int32_t channel = 0,
                      const uint8_t *bssid = nullptr, bool connect = true);
    bool disconnect(bool wifioff = false);
    wl_status_t status();
    IPAddress localIP();

private:
    WiFiMode_t mode_ = WIFI_OFF;
    WiFiSleepType_t sleep_ = WIFI_MODEM_SLEEP;
};

extern ESP8266WiFiClass WiFi;

class ClientContext;
class WiFiServer;
namespace lwip {
struct Listener;
}

class WiFiClient : public Client {
public:
    WiFiClient();
    ~WiFiClient() override;
    WiFiClient(const WiFiClient &other);
    WiFiClient &operator=(const WiFiClient &other);

    uint8_t status();
    size_t write(uint8_t b) override;
    size_t write(const uint8_t *buf, size_t size) override;
    using Print::write;
    int available() override;
    int read() override;
    int read(uint8_t *buf, size_t size);
    int read(char *buf, size_t size) { return read(reinterpret_cast<uint8_t *>(buf), size); }
    int peek() override;
    // Waits until `length` bytes are available or the timeout runs out (WiFiClient.cpp:285-304).
    size_t peekBytes(uint8_t *buffer, size_t length);
    size_t peekBytes(char *buffer, size_t length) {
        return peekBytes(reinterpret_cast<uint8_t *>(buffer), length);
    }
    // Waits up to maxWaitMs (0: 300 ms) for the peer to acknowledge what was written.
    bool flush(unsigned int maxWaitMs);
    // flush(maxWaitMs), then close.
    bool stop(unsigned int maxWaitMs);
    void flush() { (void)flush(0); }
    void stop() override { (void)stop(0); }
    uint8_t connected() override;
    operator bool() override;
    int availableForWrite() override;
    void setNoDelay(bool nodelay);
    bool getNoDelay() const;
    void keepAlive(uint16_t idle_sec = TCP_DEFAULT_KEEPALIVE_IDLE_SEC,
                   uint16_t intv_sec = TCP_DEFAULT_KEEPALIVE_INTERVAL_SEC,
                   uint8_t count = TCP_DEFAULT_KEEPALIVE_COUNT);
    bool isKeepAliveEnabled() const;
    void disableKeepAlive() { keepAlive(0, 0, 0); }
    bool hasPeekBufferAPI() const override { return true; }
    size_t peekAvailable() override;
    const char *peekBuffer() override;
    void peekConsume(size_t consume) override;
    // flush(0), then reset the connection.
    void abort();

    friend class WiFiServer;

protected:
    explicit WiFiClient(ClientContext *client);

    ClientContext *_client = nullptr;
};

class WiFiServer {
public:
    explicit WiFiServer(uint16_t port);
    virtual ~WiFiServer() = default;
    void begin();
    void begin(uint16_t port);
    void begin(uint16_t port, uint8_t backlog);
    bool hasClient();
    WiFiClient accept();
    void setNoDelay(bool nodelay);
    bool getNoDelay();
    uint8_t status();
    uint16_t port() const { return _port; }
    void close();
    void stop() { close(); }

    // Called by the TCP model when a connection is established (WiFiServer.cpp:187-205).
    void _accept(ClientContext *client);

protected:
    uint16_t _port;
    lwip::Listener *listener_ = nullptr;
    ClientContext *_unclaimed = nullptr;
    enum { _ndDefault, _ndFalse, _ndTrue } _noDelay = _ndDefault;
};
