# Generated from core_ext/limits.py by setup.py. Do not edit.
cdef extern from *:
    """
    #define LIMIT_BATCH_EVENTS_MAX 8190ULL
    #define LIMIT_ACCOUNTS_MAX 4000000ULL
    #define LIMIT_AMOUNT_MINOR_MAX 18446744073709551615ULL
    #define LIMIT_TIMEOUT_SECONDS_MAX 4294967295ULL
    #define LIMIT_MAP_BYTES_INITIAL 1073741824ULL
    #define LIMIT_MAP_BYTES_MAX 1099511627776ULL
    #define LIMIT_FRAME_BYTES_MAX 4194304ULL
    #define LIMIT_BATCH_FRAME_ITEMS_MAX 4095ULL
    #define LIMIT_STRING_BYTES_MAX 1024ULL
    #define LIMIT_BIN_BYTES_MAX 64ULL
    #define LIMIT_MAP_ENTRIES_MAX 32ULL
    #define LIMIT_ARRAY_ITEMS_MAX 8192ULL
    #define LIMIT_IN_FLIGHT_REQUESTS_MAX 1024ULL
    #define LIMIT_CONNECTIONS_MAX 1024ULL
    #define LIMIT_WRITE_BUFFER_BYTES_HIGH 1048576ULL
    #define LIMIT_WRITE_STALL_MS_MAX 5000ULL
    #define LIMIT_HANDSHAKE_TIMEOUT_MS 5000ULL
    #define LIMIT_RATE_ITEMS_PER_SECOND 200000ULL
    #define LIMIT_RATE_BURST_ITEMS 400000ULL
    #define LIMIT_SERVER_BATCH_EVENTS_MAX 8190ULL
    """
    const unsigned long long LIMIT_BATCH_EVENTS_MAX
    const unsigned long long LIMIT_ACCOUNTS_MAX
    const unsigned long long LIMIT_AMOUNT_MINOR_MAX
    const unsigned long long LIMIT_TIMEOUT_SECONDS_MAX
    const unsigned long long LIMIT_MAP_BYTES_INITIAL
    const unsigned long long LIMIT_MAP_BYTES_MAX
    const unsigned long long LIMIT_FRAME_BYTES_MAX
    const unsigned long long LIMIT_BATCH_FRAME_ITEMS_MAX
    const unsigned long long LIMIT_STRING_BYTES_MAX
    const unsigned long long LIMIT_BIN_BYTES_MAX
    const unsigned long long LIMIT_MAP_ENTRIES_MAX
    const unsigned long long LIMIT_ARRAY_ITEMS_MAX
    const unsigned long long LIMIT_IN_FLIGHT_REQUESTS_MAX
    const unsigned long long LIMIT_CONNECTIONS_MAX
    const unsigned long long LIMIT_WRITE_BUFFER_BYTES_HIGH
    const unsigned long long LIMIT_WRITE_STALL_MS_MAX
    const unsigned long long LIMIT_HANDSHAKE_TIMEOUT_MS
    const unsigned long long LIMIT_RATE_ITEMS_PER_SECOND
    const unsigned long long LIMIT_RATE_BURST_ITEMS
    const unsigned long long LIMIT_SERVER_BATCH_EVENTS_MAX
