"""Call scenarios (callback, voice notification, verification code) written as plain async
code over ``Leg`` objects and media endpoints; they report through ``switch.events``."""
