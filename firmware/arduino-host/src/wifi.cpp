// wifi.cpp - the station, WiFiServer and WiFiClient of libraries/ESP8266WiFi/src (core 3.1.2),
// over the TCP model in lwip.cpp. Line numbers refer to the core's files.
#include <stdio.h>
#include <string.h>

#include "ClientContext.h"
#include "ESP8266WiFi.h"
#include "host.h"

ESP8266WiFiClass WiFi;

namespace {
bool joined = false;
wl_status_t station = WL_IDLE_STATUS;
} // namespace

namespace lwip {
bool netif_up() { return joined; }
} // namespace lwip

String IPAddress::toString() const {
    char text[16];
    snprintf(text, sizeof text, "%u.%u.%u.%u", (*this)[0], (*this)[1], (*this)[2], (*this)[3]);
    return String(text);
}

// ---- the station ----

void ESP8266WiFiClass::persistent(bool) {}

bool ESP8266WiFiClass::mode(WiFiMode_t mode) {
    mode_ = mode;
    if (!(mode & WIFI_STA)) {
        joined = false;
        station = WL_IDLE_STATUS;
    }
    return true;
}

bool ESP8266WiFiClass::setSleepMode(WiFiSleepType_t type, uint8_t) {
    sleep_ = type;
    return true;
}

bool ESP8266WiFiClass::setAutoReconnect(bool) { return true; }

wl_status_t ESP8266WiFiClass::begin(const char *ssid, const char *passphrase, int32_t,
                                    const uint8_t *, bool connect) {
    mode_ = static_cast<WiFiMode_t>(mode_ | WIFI_STA); // begin() enables the station
    if (!connect) {
        return status();
    }
    // The board offers one network; the SDK's status names why any other fails
    // (ESP8266WiFiSTA.cpp:555-572).
    const host::Config &cfg = host::config();
    const char *psk = passphrase != nullptr ? passphrase : "";
    if (ssid == nullptr || strcmp(ssid, cfg.ssid) != 0) {
        station = WL_NO_SSID_AVAIL;
    } else if (strcmp(psk, cfg.psk) != 0) {
        station = WL_WRONG_PASSWORD;
    } else {
        station = WL_CONNECTED;
    }
    joined = station == WL_CONNECTED;
    return status();
}

bool ESP8266WiFiClass::disconnect(bool) {
    joined = false;
    station = WL_DISCONNECTED;
    return true;
}

wl_status_t ESP8266WiFiClass::status() { return station; }

IPAddress ESP8266WiFiClass::localIP() { return IPAddress(joined ? host::config().ip : 0u); }

// ---- WiFiClient (WiFiClient.cpp) ----

WiFiClient::WiFiClient() { _timeout = 5000; } // line 80

WiFiClient::WiFiClient(ClientContext *client) : _client(client) {
    _timeout = 5000; // lines 84-93
    _client->ref();
    setNoDelay(false); // the default: Nagle on
}

WiFiClient::~WiFiClient() {
    if (_client != nullptr) {
        _client->unref();
    }
}

WiFiClient::WiFiClient(const WiFiClient &other) : Client() {
    _client = other._client;
    _timeout = other._timeout;
    if (_client != nullptr) {
        _client->ref();
    }
}

WiFiClient &WiFiClient::operator=(const WiFiClient &other) {
    // lines 117-128: the old connection's last reference closes it, with no flush.
    if (other._client != nullptr) {
        other._client->ref();
    }
    if (_client != nullptr) {
        _client->unref();
    }
    _client = other._client;
    _timeout = other._timeout;
    return *this;
}

uint8_t WiFiClient::status() { return _client ? _client->state() : static_cast<uint8_t>(CLOSED); }

size_t WiFiClient::write(uint8_t b) { return write(&b, 1); }

size_t WiFiClient::write(const uint8_t *buf, size_t size) {
    if (_client == nullptr || size == 0) {
        return 0;
    }
    _client->setTimeout(static_cast<uint32_t>(_timeout));
    return _client->write(buf, size);
}

int WiFiClient::available() {
    if (_client == nullptr) {
        return 0;
    }
    const int n = static_cast<int>(_client->getSize());
    if (n == 0) {
        optimistic_yield(100); // lines 246-257
    }
    return n;
}

int WiFiClient::read() { return available() ? _client->read() : -1; }

int WiFiClient::read(uint8_t *buf, size_t size) {
    if (_client == nullptr) {
        host::fatal("WiFiClient::read(buf, size) on an empty client dereferences null (line 269)");
    }
    return static_cast<int>(_client->read(reinterpret_cast<char *>(buf), size));
}

int WiFiClient::peek() { return available() ? _client->peek() : -1; }

size_t WiFiClient::peekBytes(uint8_t *buffer, size_t length) {
    if (_client == nullptr) {
        return 0;
    }
    // lines 285-304: waits for `length` bytes, up to the timeout, yielding all along.
    host::Blocking wait(host::WAIT_PEEK);
    const unsigned long start = millis();
    while (available() < static_cast<int>(length) && millis() - start < _timeout) {
        wait.waiting();
        yield();
    }
    const size_t avail = static_cast<size_t>(available());
    const size_t count = avail < length ? avail : length;
    return _client->peekBytes(reinterpret_cast<char *>(buffer), count);
}

bool WiFiClient::flush(unsigned int maxWaitMs) {
    if (_client == nullptr) {
        return true;
    }
    return _client->wait_until_acked(maxWaitMs == 0 ? WIFICLIENT_MAX_FLUSH_WAIT_MS : maxWaitMs);
}

bool WiFiClient::stop(unsigned int maxWaitMs) {
    if (_client == nullptr) {
        return true;
    }
    bool ok = flush(maxWaitMs); // lines 316-325
    if (_client->close() != 0) {
        ok = false;
    }
    return ok;
}

uint8_t WiFiClient::connected() {
    // lines 327-333: a peer that closed is "not connected" even with data left to read.
    if (_client == nullptr || _client->state() == CLOSED) {
        return 0;
    }
    return _client->state() == ESTABLISHED || available();
}

WiFiClient::operator bool() { return available() || connected(); }

int WiFiClient::availableForWrite() {
    return _client ? static_cast<int>(_client->availableForWrite()) : 0;
}

void WiFiClient::setNoDelay(bool nodelay) {
    if (_client != nullptr) {
        _client->setNoDelay(nodelay);
    }
}

bool WiFiClient::getNoDelay() const { return _client != nullptr && _client->getNoDelay(); }

void WiFiClient::keepAlive(uint16_t idle_sec, uint16_t intv_sec, uint8_t count) {
    if (_client == nullptr) {
        host::fatal("WiFiClient::keepAlive on an empty client dereferences null (line 419)");
    }
    _client->keepAlive(idle_sec, intv_sec, count);
}

bool WiFiClient::isKeepAliveEnabled() const {
    if (_client == nullptr) {
        host::fatal("WiFiClient::isKeepAliveEnabled on an empty client dereferences null");
    }
    return _client->isKeepAliveEnabled();
}

size_t WiFiClient::peekAvailable() { return _client ? _client->peekAvailable() : 0; }

const char *WiFiClient::peekBuffer() { return _client ? _client->peekBuffer() : nullptr; }

void WiFiClient::peekConsume(size_t consume) {
    if (_client != nullptr) {
        _client->peekConsume(consume);
    }
}

void WiFiClient::abort() {
    if (_client == nullptr) {
        return;
    }
    flush(0); // lines 381-388: abort waits for acknowledgements first
    _client->abort();
}

// ---- WiFiServer (WiFiServer.cpp) ----

WiFiServer::WiFiServer(uint16_t port) : _port(port) {}

void WiFiServer::begin() { begin(_port); }

// MAX_PENDING_CLIENTS_PER_PORT (WiFiServer.cpp:38-40).
void WiFiServer::begin(uint16_t port) { begin(port, 5); }

void WiFiServer::begin(uint16_t port, uint8_t backlog) {
    close(); // lines 62-89
    if (backlog == 0) {
        return;
    }
    _port = port;
    listener_ = lwip::listen(port, backlog, this); // null when the chip's calls would fail
}

bool WiFiServer::hasClient() { return _unclaimed != nullptr; }

WiFiClient WiFiServer::accept() {
    if (_unclaimed != nullptr) { // lines 134-152
        WiFiClient result(_unclaimed);
        if (_unclaimed->getPCB() != nullptr) {
            lwip::backlog_accepted(_unclaimed->getPCB());
        }
        _unclaimed = _unclaimed->next();
        result.setNoDelay(getNoDelay());
        host::progress();
        return result;
    }
    optimistic_yield(1000);
    return WiFiClient();
}

void WiFiServer::setNoDelay(bool nodelay) { _noDelay = nodelay ? _ndTrue : _ndFalse; }

bool WiFiServer::getNoDelay() { return _noDelay == _ndTrue; }

uint8_t WiFiServer::status() { return listener_ != nullptr ? LISTEN : CLOSED; }

void WiFiServer::close() {
    lwip::listen_close(listener_);
    listener_ = nullptr;
}

void WiFiServer::_accept(ClientContext *client) {
    // lines 187-205: every new connection is taken at once and queued until accept().
    if (_unclaimed == nullptr) {
        _unclaimed = client;
        return;
    }
    ClientContext *last = _unclaimed;
    while (last->next() != nullptr) {
        last = last->next();
    }
    last->next(client);
}
