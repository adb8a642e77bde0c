# Names shared by the supervisor (firmware/supervisor.py) and the modules it loads only while
# they are needed (firmware/provision.py), so that neither imports the other.

# The supervisor's states, as the log shows them ("state: wifi -> time").
WIFI = "wifi"
TIME = "time"
PROVISION = "provision"
CONNECT = "connect"
ATTRIBUTES = "attributes"
RUN = "run"

# What one provisioning attempt decided (provision.attempt()); the supervisor applies it.
NEW_CREDENTIALS = 0  # the platform issued credentials: store them, then connect
TRY_TOKEN = 1  # FAILURE, and a device token is configured: connect once with it
KEEP_WORKING = 2  # a requested re-provisioning got nowhere: go on with the working credentials
REFUSED = 3  # NOT_FOUND, or FAILURE with no way forward: retry slowly (retry_slow_s)
NO_DECISION = 4  # no reply, or one we cannot use: back off and provision again
