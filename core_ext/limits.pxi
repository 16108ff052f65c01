# Generated from core_ext/limits.py by setup.py. Do not edit.
cdef extern from *:
    """
    #define LIMIT_BATCH_EVENTS_MAX 8190ULL
    #define LIMIT_ACCOUNTS_MAX 4000000ULL
    #define LIMIT_AMOUNT_MINOR_MAX 18446744073709551615ULL
    #define LIMIT_TIMEOUT_SECONDS_MAX 4294967295ULL
    #define LIMIT_MAP_BYTES_INITIAL 1073741824ULL
    #define LIMIT_MAP_BYTES_MAX 1099511627776ULL
    """
    const unsigned long long LIMIT_BATCH_EVENTS_MAX
    const unsigned long long LIMIT_ACCOUNTS_MAX
    const unsigned long long LIMIT_AMOUNT_MINOR_MAX
    const unsigned long long LIMIT_TIMEOUT_SECONDS_MAX
    const unsigned long long LIMIT_MAP_BYTES_INITIAL
    const unsigned long long LIMIT_MAP_BYTES_MAX
