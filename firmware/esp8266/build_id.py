# Derives the firmware's build id from its sources and environment and passes it to the compiler.
#
# FNV-1a 64 over the core, the sketch, platformio.ini and the environment's name, so one source
# tree and one environment always give one id: the harness skips flashing a board that already
# shows it. firmware/arduino-host/build.rs computes the same id for the host build.
Import("env")  # noqa: F821 (PlatformIO provides it)

import pathlib

root = pathlib.Path(env.subst("$PROJECT_DIR"))  # noqa: F821
# The core's files in the order firmware/core/build.rs and firmware/arduino-host/build.rs use.
core = ["relay.h", "relay.c", "provision.h", "provision.c", "relay_internal.h"]
sources = [root.parent / "core" / name for name in core] + [
    root / "src" / "main.cpp",
    root / "platformio.ini",
]
data = b"".join(path.read_bytes().replace(b"\r", b"") for path in sources)
data += env.subst("$PIOENV").encode()  # noqa: F821
digest = 0xCBF29CE484222325
for byte in data:
    digest = ((digest ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
build_id = "%012x" % (digest >> 16)
print("relay build id: " + build_id)
env.Append(CPPDEFINES=[("RELAY_BUILD_ID", '\\"%s\\"' % build_id)])  # noqa: F821
