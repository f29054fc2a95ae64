/* conform: the applications that the official Engine.IO v4 and Socket.IO v5
 * test suites expect (docs/protocol.md §Conformance mode): a raw Engine.IO
 * echo (mounted on /engine.io/) and a Socket.IO app with namespaces "/" and
 * "/custom". Neither needs a ctx. */
#ifndef CONFORM_H
#define CONFORM_H

#include "engineio/session.h"
#include "socketio/sock.h"

extern const struct eio_app conform_echo_app;
extern const struct sio_app conform_sio_app;

#endif
