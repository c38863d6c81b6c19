/*
 * The offline mode: imapgwd -S message judges one message with the
 * daemon's scand, in its sandbox, and prints the verdict.  See offline.c
 * and imapgwd(8).
 */
#ifndef IMAPGW_OFFLINE_H
#define IMAPGW_OFFLINE_H

/* Exit statuses of the offline mode. */
#define OFFLINE_EXIT_CLEAN 0 /* the message passes unchanged */
#define OFFLINE_EXIT_ACTED 1 /* the policy acted: changed, reject, drop */
#define OFFLINE_EXIT_SCANERR 2 /* it could not be judged */
#define OFFLINE_EXIT_FAIL 3 /* usage, configuration or system error */

/* 1 if the command line asks for the offline mode (it has -S). */
int offline_wanted(int argc, char **argv);
int offline_main(int argc, char **argv);

#endif
