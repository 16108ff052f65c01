# Generated from core_ext/limits.py by setup.py. Do not edit.
cdef extern from *:
    """
    #define LIMIT_BATCH_EVENTS_MAX 8190ULL
    #define LIMIT_ACCOUNTS_MAX 4000000ULL
    #define LIMIT_AMOUNT_MINOR_MAX 18446744073709551615ULL
    #define LIMIT_TIMEOUT_SECONDS_MAX 4294967295ULL
    #define LIMIT_ACCOUNT_HISTORY_ROWS_MAX 8190ULL
    #define LIMIT_CLOCK_NS_MAX 9223372036854775807ULL
    #define LIMIT_MAP_BYTES_INITIAL 1073741824ULL
    #define LIMIT_MAP_BYTES_MAX 1099511627776ULL
    #define LIMIT_JOURNAL_RECORD_BYTES_MAX 67108864ULL
    #define LIMIT_CHECKPOINT_INTERVAL_BATCHES 10000ULL
    #define LIMIT_JOURNAL_SECTIONS_MAX 64ULL
    #define LIMIT_JOURNAL_SECTION_NAME_BYTES_MAX 64ULL
    #define LIMIT_FRAME_BYTES_MAX 4194304ULL
    #define LIMIT_BATCH_FRAME_ITEMS_MAX 4095ULL
    #define LIMIT_STRING_BYTES_MAX 1024ULL
    #define LIMIT_BIN_BYTES_MAX 64ULL
    #define LIMIT_MAP_ENTRIES_MAX 32ULL
    #define LIMIT_ARRAY_ITEMS_MAX 8192ULL
    #define LIMIT_IN_FLIGHT_REQUESTS_MAX 1024ULL
    #define LIMIT_IN_FLIGHT_BYTES_MAX 16777216ULL
    #define LIMIT_CONNECTIONS_MAX 1024ULL
    #define LIMIT_WRITE_BUFFER_BYTES_HIGH 1048576ULL
    #define LIMIT_WRITE_STALL_MS_MAX 5000ULL
    #define LIMIT_HANDSHAKE_TIMEOUT_MS 5000ULL
    #define LIMIT_RATE_ITEMS_PER_SECOND 200000ULL
    #define LIMIT_RATE_BURST_ITEMS 400000ULL
    #define LIMIT_SERVER_BATCH_EVENTS_MAX 8190ULL
    #define LIMIT_SERVER_QUEUE_EVENTS_MAX 131040ULL
    #define LIMIT_RULES_PER_SET_MAX 64ULL
    #define LIMIT_RULES_CONFIG_BYTES_MAX 4194304ULL
    #define LIMIT_RULES_NAME_BYTES_MAX 64ULL
    #define LIMIT_RULES_LIST_ENTRIES_MAX 100000ULL
    #define LIMIT_RULES_KYC_TIERS 3ULL
    #define LIMIT_RULES_ACCOUNTS_TRACKED_MAX 262144ULL
    #define LIMIT_RULES_DEVICES_TRACKED_MAX 65536ULL
    #define LIMIT_RULES_DYNAMIC_QR_TRACKED_MAX 262144ULL
    #define LIMIT_RULES_WINDOW_BUCKETS 8ULL
    #define LIMIT_RULES_SKETCH_BITS 256ULL
    #define LIMIT_RULES_DISTINCT_MAX 64ULL
    #define LIMIT_RULES_BURST_COUNT_MAX 8ULL
    #define LIMIT_RULES_PERCENT_MAX 100000ULL
    #define LIMIT_RULES_DURATION_SECONDS_MAX 316224000ULL
    #define LIMIT_RULES_LOG_LINE_BYTES_MAX 65536ULL
    #define LIMIT_QR_PAYLOAD_CHARS_MAX 512ULL
    #define LIMIT_QR_PAYLOAD_BYTES_MAX 2048ULL
    #define LIMIT_QR_GUID_CHARS_MAX 32ULL
    #define LIMIT_QR_AMOUNT_CHARS_MAX 13ULL
    #define LIMIT_QR_FEE_PERCENT_CHARS_MAX 5ULL
    #define LIMIT_QR_MERCHANT_NAME_CHARS_MAX 25ULL
    #define LIMIT_QR_MERCHANT_CITY_CHARS_MAX 15ULL
    #define LIMIT_QR_POSTAL_CODE_CHARS_MAX 10ULL
    #define LIMIT_QR_ADDITIONAL_DATA_CHARS_MAX 25ULL
    #define LIMIT_QR_TAX_ID_CHARS_MAX 20ULL
    #define LIMIT_QR_MERCHANT_KEYS_MAX 8ULL
    #define LIMIT_UPI_PARAMS_MAX 64ULL
    #define LIMIT_UPI_VPA_CHARS_MAX 255ULL
    #define LIMIT_MERCHANT_KEYS_MAX 1000000ULL
    #define LIMIT_MERCHANT_NAME_CHARS_MAX 99ULL
    #define LIMIT_MERCHANT_ID_CHARS_MAX 255ULL
    #define LIMIT_USED_QR_COUNT_MAX 10000000ULL
    """
    const unsigned long long LIMIT_BATCH_EVENTS_MAX
    const unsigned long long LIMIT_ACCOUNTS_MAX
    const unsigned long long LIMIT_AMOUNT_MINOR_MAX
    const unsigned long long LIMIT_TIMEOUT_SECONDS_MAX
    const unsigned long long LIMIT_ACCOUNT_HISTORY_ROWS_MAX
    const unsigned long long LIMIT_CLOCK_NS_MAX
    const unsigned long long LIMIT_MAP_BYTES_INITIAL
    const unsigned long long LIMIT_MAP_BYTES_MAX
    const unsigned long long LIMIT_JOURNAL_RECORD_BYTES_MAX
    const unsigned long long LIMIT_CHECKPOINT_INTERVAL_BATCHES
    const unsigned long long LIMIT_JOURNAL_SECTIONS_MAX
    const unsigned long long LIMIT_JOURNAL_SECTION_NAME_BYTES_MAX
    const unsigned long long LIMIT_FRAME_BYTES_MAX
    const unsigned long long LIMIT_BATCH_FRAME_ITEMS_MAX
    const unsigned long long LIMIT_STRING_BYTES_MAX
    const unsigned long long LIMIT_BIN_BYTES_MAX
    const unsigned long long LIMIT_MAP_ENTRIES_MAX
    const unsigned long long LIMIT_ARRAY_ITEMS_MAX
    const unsigned long long LIMIT_IN_FLIGHT_REQUESTS_MAX
    const unsigned long long LIMIT_IN_FLIGHT_BYTES_MAX
    const unsigned long long LIMIT_CONNECTIONS_MAX
    const unsigned long long LIMIT_WRITE_BUFFER_BYTES_HIGH
    const unsigned long long LIMIT_WRITE_STALL_MS_MAX
    const unsigned long long LIMIT_HANDSHAKE_TIMEOUT_MS
    const unsigned long long LIMIT_RATE_ITEMS_PER_SECOND
    const unsigned long long LIMIT_RATE_BURST_ITEMS
    const unsigned long long LIMIT_SERVER_BATCH_EVENTS_MAX
    const unsigned long long LIMIT_SERVER_QUEUE_EVENTS_MAX
    const unsigned long long LIMIT_RULES_PER_SET_MAX
    const unsigned long long LIMIT_RULES_CONFIG_BYTES_MAX
    const unsigned long long LIMIT_RULES_NAME_BYTES_MAX
    const unsigned long long LIMIT_RULES_LIST_ENTRIES_MAX
    const unsigned long long LIMIT_RULES_KYC_TIERS
    const unsigned long long LIMIT_RULES_ACCOUNTS_TRACKED_MAX
    const unsigned long long LIMIT_RULES_DEVICES_TRACKED_MAX
    const unsigned long long LIMIT_RULES_DYNAMIC_QR_TRACKED_MAX
    const unsigned long long LIMIT_RULES_WINDOW_BUCKETS
    const unsigned long long LIMIT_RULES_SKETCH_BITS
    const unsigned long long LIMIT_RULES_DISTINCT_MAX
    const unsigned long long LIMIT_RULES_BURST_COUNT_MAX
    const unsigned long long LIMIT_RULES_PERCENT_MAX
    const unsigned long long LIMIT_RULES_DURATION_SECONDS_MAX
    const unsigned long long LIMIT_RULES_LOG_LINE_BYTES_MAX
    const unsigned long long LIMIT_QR_PAYLOAD_CHARS_MAX
    const unsigned long long LIMIT_QR_PAYLOAD_BYTES_MAX
    const unsigned long long LIMIT_QR_GUID_CHARS_MAX
    const unsigned long long LIMIT_QR_AMOUNT_CHARS_MAX
    const unsigned long long LIMIT_QR_FEE_PERCENT_CHARS_MAX
    const unsigned long long LIMIT_QR_MERCHANT_NAME_CHARS_MAX
    const unsigned long long LIMIT_QR_MERCHANT_CITY_CHARS_MAX
    const unsigned long long LIMIT_QR_POSTAL_CODE_CHARS_MAX
    const unsigned long long LIMIT_QR_ADDITIONAL_DATA_CHARS_MAX
    const unsigned long long LIMIT_QR_TAX_ID_CHARS_MAX
    const unsigned long long LIMIT_QR_MERCHANT_KEYS_MAX
    const unsigned long long LIMIT_UPI_PARAMS_MAX
    const unsigned long long LIMIT_UPI_VPA_CHARS_MAX
    const unsigned long long LIMIT_MERCHANT_KEYS_MAX
    const unsigned long long LIMIT_MERCHANT_NAME_CHARS_MAX
    const unsigned long long LIMIT_MERCHANT_ID_CHARS_MAX
    const unsigned long long LIMIT_USED_QR_COUNT_MAX
