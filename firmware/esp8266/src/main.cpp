// The NodeMCU relay: a thin pump between WiFiServer/WiFiClient, HardwareSerial and the portable
// relay core (firmware/core), which holds all of the logic.
//
// Boot: Serial at RELAY_BAUD, the boot line and the provisioning exchange (credentials kept in
// the EEPROM sector), WiFi in station mode with automatic reconnection, then the data server on
// RELAY_PORT, the status channel on RELAY_STATUS_PORT, and the banner.
#include <Arduino.h>
#include <EEPROM.h>
#include <ESP8266WiFi.h>

#include "relay.h"

#ifndef RELAY_BUILD_ID
#error "RELAY_BUILD_ID is set by build_id.py (extra_scripts in platformio.ini)"
#endif
#ifndef RELAY_BAUD
#define RELAY_BAUD 115200
#endif
#ifndef RELAY_PORT
#define RELAY_PORT 8888
#endif
#ifndef RELAY_STATUS_PORT
#define RELAY_STATUS_PORT 8889
#endif

// What relay-hil and the virtual board read out of the image to name this build.
extern "C" const char relay_build_id_record[] __attribute__((used)) =
    "relay-build-id:" RELAY_BUILD_ID;

static relay_t relay;
static WiFiServer server(RELAY_PORT);
static WiFiServer status_server(RELAY_STATUS_PORT);
static WiFiClient clients[RELAY_MAX_CLIENTS];
static char text[RELAY_STATUS_MAX];

// Most UART bytes handed to the core per pass; the core never takes more than a queue holds.
static const size_t UART_CHUNK = 256;

static void say(const char *s, size_t n) {
    Serial.write(reinterpret_cast<const uint8_t *>(s), n < sizeof text ? n : sizeof text - 1);
}

// Prints the boot line and takes credentials from the UART: for RELAY_PROVISION_LISTEN_MS
// when some are stored, until some arrive when none are.
static void provision(relay_wifi_t *wifi) {
    bool have = relay_wifi_decode(EEPROM.getConstDataPtr(), RELAY_CRED_RECORD_SIZE, wifi);
    say(text, relay_format_boot(have ? wifi : nullptr, RELAY_BUILD_ID, text, sizeof text));
    relay_provision_t request = {};
    const uint32_t start = millis();
    while (!have || millis() - start < RELAY_PROVISION_LISTEN_MS) {
        const int c = Serial.read();
        if (c < 0) {
            delay(1); // feeds the watchdog and the WiFi stack while waiting
            continue;
        }
        relay_wifi_t got = {};
        const int result = relay_provision_input(&request, static_cast<uint8_t>(c), &got);
        if (result == RELAY_PROV_NONE) {
            continue;
        }
        say(text, relay_format_provision_reply(result, &got, text, sizeof text));
        if (result == RELAY_PROV_OK) {
            relay_wifi_encode(&got, EEPROM.getDataPtr(), RELAY_CRED_RECORD_SIZE);
            EEPROM.commit();
            *wifi = got;
            return;
        }
    }
}

static void join(const relay_wifi_t *wifi) {
    WiFi.persistent(false); // the credentials live in the relay's record, not the SDK's
    WiFi.mode(WIFI_STA);
    WiFi.setAutoReconnect(true);
    WiFi.begin(wifi->ssid, wifi->psk_len > 0 ? wifi->psk : nullptr);
    uint32_t last = millis();
    while (WiFi.status() != WL_CONNECTED) {
        delay(100);
        if (millis() - last >= 10000) {
            last = millis();
            const int n = snprintf(text, sizeof text, "relay wifi joining ssid=%s status=%d\r\n",
                                   wifi->ssid, static_cast<int>(WiFi.status()));
            say(text, n > 0 ? static_cast<size_t>(n) : 0);
        }
    }
}

void setup() {
    Serial.begin(RELAY_BAUD);
    Serial.setRxBufferSize(1024);
    EEPROM.begin(RELAY_CRED_RECORD_SIZE);
    relay_wifi_t wifi = {};
    provision(&wifi);
    join(&wifi);

    relay_config_t cfg;
    relay_config_default(&cfg);
    const int rc = relay_init(&relay, &cfg, millis());
    if (rc != RELAY_OK) {
        const int n = snprintf(text, sizeof text, "relay config error: %s\r\n", relay_strerror(rc));
        say(text, n > 0 ? static_cast<size_t>(n) : 0);
        for (;;) {
            delay(1000);
        }
    }
    server.begin(RELAY_PORT, RELAY_MAX_CLIENTS + 1);
    server.setNoDelay(true);
    status_server.begin();

    const String ip = WiFi.localIP().toString();
    relay_banner_info_t info = {ip.c_str(), RELAY_BUILD_ID, RELAY_PORT, RELAY_STATUS_PORT};
    say(text, relay_format_banner(&relay, &info, text, sizeof text));
}

static void accept_clients() {
    while (server.hasClient()) {
        WiFiClient c = server.accept();
        const int slot = relay_accept(&relay);
        if (slot == RELAY_REJECTED) {
            const size_t n = relay_format_reject(&relay, text, sizeof text);
            c.write(reinterpret_cast<const uint8_t *>(text), n);
            c.stop();
            continue;
        }
        c.setNoDelay(true);
        clients[slot] = c;
    }
    if (status_server.hasClient()) {
        WiFiClient s = status_server.accept();
        const size_t n = relay_format_status(&relay, text, sizeof text);
        s.write(reinterpret_cast<const uint8_t *>(text), n < sizeof text ? n : sizeof text - 1);
        s.stop();
    }
}

static void service_client(int slot) {
    WiFiClient &c = clients[slot];
    const uint8_t *data;
    size_t n;
    while ((n = relay_client_pending(&relay, slot, &data)) > 0) {
        const size_t room = static_cast<size_t>(c.availableForWrite());
        const size_t wrote = room > 0 ? c.write(data, n < room ? n : room) : 0;
        if (wrote == 0) {
            break;
        }
        relay_client_consume(&relay, slot, wrote);
    }
    // Only what the core takes is read; the rest waits in lwIP, so TCP pushes back.
    uint8_t buf[128];
    while (c.available() > 0) {
        const size_t peeked = c.peekBytes(buf, sizeof buf);
        const size_t took = relay_client_input(&relay, slot, buf, peeked);
        if (took > 0) {
            c.read(buf, took);
        }
        if (took < peeked) {
            break;
        }
    }
    if (!c.connected()) {
        relay_client_closed(&relay, slot); // drops any unterminated line
        c.stop();
    }
}

void loop() {
    relay_tick(&relay, millis());
    accept_clients();
    for (int slot = 0; slot < RELAY_MAX_CLIENTS; slot++) {
        if (relay_client_open(&relay, slot)) {
            service_client(slot);
        }
    }
    int closing;
    while ((closing = relay_next_close(&relay)) >= 0) {
        clients[closing].stop(); // stalled: the core has already freed the slot
    }

    uint8_t uart[UART_CHUNK];
    size_t got = 0;
    while (got < sizeof uart && Serial.available() > 0) {
        uart[got++] = static_cast<uint8_t>(Serial.read());
    }
    if (got > 0) {
        relay_uart_input(&relay, uart, got);
    }
    const uint8_t *data;
    size_t n;
    while ((n = relay_uart_pending(&relay, &data)) > 0) {
        const size_t room = static_cast<size_t>(Serial.availableForWrite());
        if (room == 0) {
            break;
        }
        relay_uart_consume(&relay, Serial.write(data, n < room ? n : room));
    }
}
