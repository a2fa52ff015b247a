/*
 * cl_offer.h - the helper's side of an offer (raoffer), on one libevent
 * loop:
 *
 *   TLS to the broker (CA + host name; client certificate for EXTERNAL)
 *   -> hello (role helper) -> auth.start (PLAIN initial response, or
 *   EXTERNAL with an empty one) -> the subcommand:
 *
 *   offer     bind the reverse-connection listener(s) first, read the
 *             ports back, offer.create with those addresses; show every
 *             offer.update; accept the agent's PSK-TLS connection (TLS 1.3,
 *             identity = ticket id, key = the ticket secret; anything else
 *             fails the handshake, is logged, and we keep waiting); then
 *             hand the stream to one local viewer connection (or run the
 *             viewer command). If the agent cannot reach us, a second
 *             broker connection joins the relay and the same PSK-TLS
 *             server runs inside it (over a socketpair).
 *   machines  machines.list        tickets  ticket.list
 *   cancel    offer.cancel         control  control.request, then wait
 *
 * The ticket secret and the password never reach a log or the terminal.
 */
#ifndef CL_OFFER_H
#define CL_OFFER_H

#include "cl_offer_config.h"

/*
 * Runs the configured command to its end and returns the exit code
 * (enum cl_offer_exit). plain_initial is the base64 PLAIN initial
 * response (NULL for EXTERNAL); it is kept for a relay connection's own
 * login and never copied.
 */
int cl_offer_run(const struct cl_offer_config *cfg, const char *plain_initial);

/* Exit code for an error code from the broker or rp_conn (docs/HELPER.md):
 * unavailable (3) for directory/audit/transport trouble and rate limits,
 * usage (2) for invalid params, refused (1) for the rest. */
int cl_offer_exit_for(int code);

#endif
