// An in-doubt SMS is looked up by its body's hash. Twilio's Smart Encoding may have replaced
// characters of the body with GSM-7 look-alikes (its published list); the folded hash of what
// was sent must equal that of what Twilio lists, or the message is not found and sent again.
import { describe, expect, it } from "vitest";
import { contentHash } from "../../src/ledger/provider-match";

/** Characters from Twilio's published Smart Encoding list, with what it puts in their place. */
const TWILIO_REPLACES: [string, string][] = [
  ...[..."\u00AB\u00BB\u201C\u201D\u02BA\u02EE\u201F\u275D\u275E\u301D\u301E\uFF02"].map(
    (c): [string, string] => [c, '"'],
  ),
  ...[
    ..."\u2018\u2019\u02BB\u02C8\u02BC\u02BD\u02B9\u201B\uFF07\u00B4\u02CA\u0060\u02CB\u275B",
  ].map((c): [string, string] => [c, "'"]),
  ["\u2013", "-"],
  ["\u2014", "-"],
  ["\u2026", "..."],
  ["\u00A0", " "],
];

describe("the body hash an in-doubt SMS is looked up by", () => {
  it.each(TWILIO_REPLACES)("matches %s sent as Twilio's %s", (original, replaced) => {
    const sent = `It${original}s here${original} 10${original}20`;
    expect(contentHash(sent.replaceAll(original, replaced))).toBe(contentHash(sent));
  });

  it("tells apart bodies that differ in more than the shape of a character", () => {
    expect(contentHash("Your code is 1234")).not.toBe(contentHash("Your code is 1235"));
    expect(contentHash("Offer r1")).not.toBe(contentHash("Offer r1 (changed)"));
  });
});
