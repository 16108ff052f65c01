# cython: language_level=3
"""Posts through the ledger's C API, as the compiled batch pipeline will: no Python object
per event, no GIL.  Built and run by tests/test_ledger_c_api.py."""
from libc.stdint cimport uint16_t
from libc.string cimport memset

from core_ext._ledger cimport AccountC, Ledger, TransferC


def post_through_c_api(Ledger ledger):
    cdef AccountC accounts[2]
    cdef TransferC transfers[3]
    cdef uint16_t results[3]
    cdef int index
    memset(accounts, 0, sizeof(accounts))
    memset(transfers, 0, sizeof(transfers))
    for index in range(2):
        accounts[index].id = index + 1
        accounts[index].ledger = 356
        accounts[index].code = 1
    ledger.create_accounts_c(accounts, results, 2, 1000)
    account_codes = [results[0], results[1]]
    for index in range(3):
        transfers[index].id_lo = 10 + index
        transfers[index].debit_account_id = 1
        transfers[index].credit_account_id = 2
        transfers[index].amount = 5
        transfers[index].ledger = 356
        transfers[index].code = 1
    transfers[1].flags = 1                      # linked to the next one, which fails
    transfers[2].credit_account_id = 1          # same account on both sides
    cdef int status, refused
    with nogil:                                 # the pipeline posts without holding the GIL
        status = ledger.create_transfers_nogil(transfers, results, 3, 2000)
        refused = ledger.create_transfers_nogil(transfers, results, 3, 2**63)
    try:
        ledger.create_transfers_c(transfers, results, 3, 2**63)
        raised = None
    except ValueError as error:
        raised = "ValueError"
    return {
        "raised": raised,
        "status": status,
        "refused_status": refused,
        "account_codes": account_codes,
        "transfer_codes": [results[0], results[1], results[2]],
        "stored_timestamp": transfers[0].timestamp,
        "found_amount": ledger.lookup_transfer_c(10, 0).amount,
        "credit_balance": ledger.lookup_account_c(2).credits_posted,
        "rolled_back_missing": ledger.lookup_transfer_c(11, 0) == NULL,
        "unknown_account_missing": ledger.lookup_account_c(99) == NULL,
    }
