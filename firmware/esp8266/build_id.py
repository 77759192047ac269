# Derives the firmware's build id from its sources and passes it to the compiler.
#
# The same FNV-1a 64 digest as firmware/core/build.rs, over the core and the sketch, so one
# source tree always gives one id: the harness skips flashing a board that already shows it.
Import("env")  # noqa: F821 (PlatformIO provides it)

import pathlib

root = pathlib.Path(env.subst("$PROJECT_DIR"))  # noqa: F821
sources = [
    root.parent / "core" / "relay.h",
    root.parent / "core" / "relay.c",
    root / "src" / "main.cpp",
    root / "platformio.ini",
]
digest = 0xCBF29CE484222325
for path in sources:
    for byte in path.read_bytes().replace(b"\r", b""):
        digest = ((digest ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
build_id = "%012x" % (digest >> 16)
print("relay build id: " + build_id)
env.Append(CPPDEFINES=[("RELAY_BUILD_ID", '\\"%s\\"' % build_id)])  # noqa: F821
