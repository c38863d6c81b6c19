/*
 * tlsd: the TLS process, the only one that will hold private keys.  TLS
 * termination comes with the TLS issue; today it holds its channels and
 * config under its real sandbox.
 */
#include "parent.h"
#include "proc.h"

static void
tlsd_peer_frame(struct proc_chan *c, struct imsg *imsg)
{
	if (proc_peer_common(c, imsg))
		return;
	proc_chan_fail(
	    c, "unexpected %s from peer", imsg_type_name(imsg->hdr.type));
}

int
tlsd_main(int instance, int debug, int verbose)
{
	return proc_worker_main(
	    ROLE_TLSD, instance, debug, verbose, tlsd_peer_frame);
}
