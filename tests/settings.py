"""Settings for the test suite: the service's own settings, with a throwaway secret key."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")

import chargeback.settings as service_settings

globals().update({name: value for name, value in vars(service_settings).items() if name.isupper()})
