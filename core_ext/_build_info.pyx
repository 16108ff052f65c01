"""What kind of core this is: benchmark reports state it, and refuse a trace build."""

cdef extern from *:
    """
    #ifndef SWITCH_BUILD_MODE
    #define SWITCH_BUILD_MODE "release"
    #endif
    """
    const char* SWITCH_BUILD_MODE


def build_info() -> dict:
    return {"implementation": "compiled", "mode": SWITCH_BUILD_MODE.decode()}
