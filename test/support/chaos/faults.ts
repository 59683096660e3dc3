// Provider failures injected during a chaos run. None leaves an email in doubt, and an SMS only
// until its look-up at the provider: every in_doubt at the end is owed to a kill or the restart.
import type { Cluster } from "./cluster";
import { random } from "./traffic";

/**
 * Every so often the SMTP server or the Twilio server fails the next few sends in one of the
 * ways that leave no doubt: refused for now (retried), refused for good (failed_permanent),
 * or — SMS — created but answered 500, which the look-up at the provider settles as sent.
 */
export function injectFaults(
  cluster: Cluster,
  seed: number,
): { stop(): void; armed(): number; permanent(): number } {
  const rand = random(seed * 17 + 3);
  let armed = 0;
  // Refusals for good (SMTP 550, Twilio 21211), one send each: at most this many
  // failed_permanent(provider_refused), if each was used.
  let permanent = 0;
  const timer = setInterval(() => {
    armed += 1;
    switch (Math.floor(rand() * 5)) {
      case 0:
        cluster.sink.fail({ kind: "reply", stage: "rcpt", code: 451, message: "try later" }, 3);
        break;
      case 1:
        cluster.sink.fail({ kind: "reply", stage: "rcpt", code: 550, message: "no such user" }, 1);
        permanent += 1;
        break;
      case 2:
        cluster.twilio.fail({ kind: "error", status: 429, code: 20429 }, 3);
        break;
      case 3:
        cluster.twilio.fail({ kind: "error", status: 400, code: 21211 }, 1);
        permanent += 1;
        break;
      case 4:
        cluster.twilio.fail({ kind: "error_after_create", status: 500 }, 1);
        break;
    }
  }, 1_500);
  return {
    stop() {
      clearInterval(timer);
      cluster.sink.fail(undefined);
      cluster.twilio.fail(undefined);
    },
    armed: () => armed,
    permanent: () => permanent,
  };
}
