"""Worker scripts run as separate processes (kept in their own folder so that, run as a script, no
module of mdm_prime.data shadows a third-party package such as ``tokenizers``)."""
