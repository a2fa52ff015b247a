/*
 * cl_agent.h - raagent's engine: the broker connection, prompts, tunnels,
 * control, and the local control socket.
 *
 * One outbound TLS connection to the broker with the machine certificate:
 * hello (role agent), agent.register {fqdn, addresses, sessions}, a ping
 * every keepalive seconds, agent.sessions when the session list changes.
 * Lost connections are retried with exponential backoff and full jitter
 * (a random delay in [floor, min(cap, base * 2^n)]), reset once a
 * connection stayed up `stable` seconds.
 *
 * The control socket STATE_DIR/raagent.sock (mode 0600, or 0660 with
 * control_group) takes one text line per connection: "tickets",
 * "expire ID" or "take-control ID", and answers one JSON line.
 */
#ifndef CL_AGENT_H
#define CL_AGENT_H

#include <stddef.h>

struct event_base;
struct cl_agent;
struct cl_agent_config;

/* Takes nothing over: cfg must outlive the agent. NULL with err on
 * failure (TLS credentials, socket). */
struct cl_agent *cl_agent_new(struct event_base *base,
    const struct cl_agent_config *cfg, const char *self_path, char *err,
    size_t errlen);
/* Starts connecting and listening. 0 or -1 (err). */
int cl_agent_start(struct cl_agent *a, char *err, size_t errlen);
/* Rereads the sessions now (after the configuration's static list
 * changed, or to pick up a logind change before the next poll); sends
 * agent.sessions when they differ. */
void cl_agent_sessions_changed(struct cl_agent *a);
/* Closes tunnels and the broker connection; the loop may then end. */
void cl_agent_stop(struct cl_agent *a);
void cl_agent_free(struct cl_agent *a);

/* Client side of the control socket: sends line, writes the answer to
 * out. 0, or -1 (out says why). Bounded by timeout_ms. */
int cl_agent_control(const char *state_dir, const char *line, char *out,
    size_t outlen, unsigned timeout_ms);

#endif
