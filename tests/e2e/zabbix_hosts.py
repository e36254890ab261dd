"""Host clean-up through the Zabbix API, shared by the e2e test modules."""

import time


def delete_hosts(api, hostids) -> None:
    """api.host.delete, tried again when PostgreSQL broke a deadlock between it and the server's
    own writes (deleting hosts whose triggers the server is updating: seen once, "deadlock
    detected ... while deleting tuple in relation triggers" in the web server's log). The API
    answers only "SQL statement execution has failed" with the statement, so that is what is
    retried; any other error raises at once."""
    for attempt in range(5):
        try:
            api.host.delete(*hostids)
            return
        except Exception as error:  # zabbix_utils' APIRequestError
            if "SQL statement execution has failed" not in str(error) or attempt == 4:
                raise
            time.sleep(1 + attempt)
