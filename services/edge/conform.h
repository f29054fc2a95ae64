/* conform: the applications that the official Engine.IO v4 and Socket.IO v5
 * test suites expect (architecture.md §Conformance mode): a raw Engine.IO echo
 * and a Socket.IO app with namespaces "/" and "/custom". */
#ifndef CONFORM_H
#define CONFORM_H

#include "session.h"
#include "sock.h"

extern const struct session_app conform_echo_app;
extern const struct sock_app conform_sock_app;

#endif
