"""Pure MIME handling for device messages: parsing, decoding, classifying. No I/O, no clock."""
