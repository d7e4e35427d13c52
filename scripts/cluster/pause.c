/* The sandbox container of every pod on the simulated cluster's node: it holds the pod's
 * namespaces, reaps orphaned children, and exits on SIGINT or SIGTERM (what Kubernetes'
 * own pause does). Built static (scripts/cluster/node.sh), so its image holds this file only. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal) { _exit(0); }

static void reap(int signal) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
