//! The values the deny lists judge: the User-Agent, read whole through the
//! agents' automaton, and the first From, To and Contact, whose URI is
//! taken apart as a SIP parser does (RFC 3261 §20.10, §25.1):
//!
//! - a display name, quoted (with escapes) or not, is skipped up to the
//!   `<` that opens the URI; without one the value is the URI itself;
//! - after the scheme's colon the part up to `@` is the user and the rest
//!   the host; without `@` the part is the host (the number, for `tel:`);
//!   inside `<>` the user may hold `;`, `?` and `,` (an `@` after them
//!   still ends a user, as Kamailio's URI parser reads it);
//! - a password or a port after `:` is not read (a `:` inside an IPv6
//!   host's brackets is the host's); the URI ends at `>`, or without `<>`
//!   at `;`, `?`, `,`;
//! - without `<>`, a blank after the URI may be followed by `<`: what came
//!   first was a display name (`a:b <sip:...>`). The verdict on it waits
//!   for the header's end.
//!
//! The user and domain automata both read the part before `@`, since only
//! `@` or the URI's end says which it was. A To header goes on to be read
//! for its tag.

use super::{
    fnv, fold, name, HeaderScan, ADDR_ESCAPE, ADDR_LEAD, ADDR_NAME, ADDR_QUOTED, AGENT_LEAD,
    AGENT_VALUE, FNV_BASIS, N_CONTACT, N_CONTACT_SHORT, N_FROM, N_FROM_SHORT, N_TO, N_TO_SHORT,
    N_USER_AGENT, READ_ADDRESSES, READ_AGENTS, SKIP, TO_LINE, URI_HOST, URI_PART, URI_REST,
    URI_SCHEME,
};
use crate::rules::{feed, Rules, DEAD, START_AGENT, START_DOMAIN, START_USER};

/// `seen` bits.
pub(super) const SEEN_FROM: u32 = 1;
pub(super) const SEEN_TO: u32 = 2;
pub(super) const SEEN_CONTACT: u32 = 4;

/// `addr` bits: the URI being read.
const ADDR_TO: u32 = 1;
pub(super) const ADDR_ANGLE: u32 = 2;
/// After a `:` in the user or host part: a password or a port.
const ADDR_FROZEN: u32 = 4;
const ADDR_TEL: u32 = 8;
const USER_HIT: u32 = 16;
const DOMAIN_HIT: u32 = 32;
/// Inside `<>`, past a `;`, `?` or `,` in the user-or-host part: a host
/// has ended, a user goes on.
const ADDR_PARAMS: u32 = 64;
/// Inside an IPv6 host's brackets.
const ADDR_V6: u32 = 128;
/// A URI without `<>` ended at a blank: its verdict (`DENY_*` bits,
/// shifted by `PENDING`) waits for the header's end, unless a `<` comes.
const ADDR_TENTATIVE: u32 = 256;
const PENDING: u32 = 16;

/// `denied` bits.
pub(super) const DENY_AGENT: u32 = 1;
pub(super) const DENY_METHOD: u32 = 2;
const DENY_USER: u32 = 4;
const DENY_DOMAIN: u32 = 8;

const TEL: u64 = name(b"tel");

impl HeaderScan {
    /// A header only the lists read, by its name: sets the state its
    /// value is read in and says whether it was one.
    #[inline(always)]
    pub(super) fn matched_header(&mut self, n: (u64, u32)) -> bool {
        let addresses = self.want & READ_ADDRESSES != 0;
        let seen = if addresses && (n == N_FROM || n == N_FROM_SHORT) {
            SEEN_FROM
        } else if addresses && (n == N_TO || n == N_TO_SHORT) {
            SEEN_TO
        } else if addresses && (n == N_CONTACT || n == N_CONTACT_SHORT) {
            SEEN_CONTACT
        } else if self.want & READ_AGENTS != 0 && n == N_USER_AGENT {
            // Every User-Agent, not only the first: a tool adding its own
            // after a borrowed one is still seen.
            self.matcher = u32::from(START_AGENT);
            self.state = AGENT_LEAD;
            return true;
        } else {
            return false;
        };
        if self.seen & seen != 0 {
            return false;
        }
        self.seen |= seen;
        self.state = self.begin_address(seen == SEEN_TO);
        true
    }

    /// A From, To or Contact value begins.
    #[inline(always)]
    pub(super) fn begin_address(&mut self, to: bool) -> u32 {
        self.addr = if to { ADDR_TO } else { 0 };
        self.user = u32::from(DEAD);
        self.domain = u32::from(DEAD);
        ADDR_LEAD
    }

    /// The header ended: a verdict waiting on it is taken.
    #[inline(always)]
    pub(super) fn end_header(&mut self) {
        if self.addr & ADDR_TENTATIVE != 0 {
            self.denied |= self.addr >> PENDING;
            self.addr &= ADDR_TO;
        }
    }

    /// The state that reads a To header's parameters for the tag, from
    /// `b` (a `;` there counts).
    #[inline(always)]
    pub(super) fn tag_search(&mut self, b: u8) -> u32 {
        self.hash = u64::from(b);
        TO_LINE
    }

    /// One byte of a value the lists read.
    #[inline(always)]
    pub(super) fn value_byte(&mut self, b: u8, blank: bool, rules: &impl Rules) {
        match self.state {
            AGENT_LEAD if blank => {}
            AGENT_LEAD | AGENT_VALUE => {
                let (next, hit) = feed(rules, self.matcher, b);
                self.matcher = next;
                self.state = if hit {
                    self.denied |= DENY_AGENT;
                    SKIP
                } else if next == u32::from(DEAD) {
                    SKIP
                } else {
                    AGENT_VALUE
                };
            }
            ADDR_LEAD if blank => {}
            ADDR_LEAD => {
                self.state = match b {
                    b'"' => ADDR_QUOTED,
                    b'<' => self.begin_uri(),
                    // A URI without brackets, or a display name's first
                    // word: its colon or its blank will say.
                    _ => {
                        self.hash = fnv(FNV_BASIS, fold(b));
                        URI_SCHEME
                    }
                };
            }
            ADDR_QUOTED => {
                self.state = match b {
                    b'\\' => ADDR_ESCAPE,
                    b'"' => ADDR_NAME,
                    _ => ADDR_QUOTED,
                };
            }
            ADDR_ESCAPE => self.state = ADDR_QUOTED,
            ADDR_NAME => {
                self.state = match b {
                    b'<' => self.begin_uri(),
                    b'"' => ADDR_QUOTED,
                    // A bare URI's header parameters (or its next value):
                    // it was the URI after all.
                    b';' | b',' if self.addr & ADDR_TENTATIVE != 0 => {
                        self.end_header();
                        self.after_address(b)
                    }
                    _ => ADDR_NAME,
                };
            }
            URI_SCHEME => {
                self.state = match b {
                    b':' => self.begin_part(),
                    b'<' => self.begin_uri(),
                    b'"' => ADDR_QUOTED,
                    _ if blank && self.addr & ADDR_ANGLE == 0 => ADDR_NAME,
                    _ if blank => URI_SCHEME,
                    _ => {
                        self.hash = fnv(self.hash, fold(b));
                        URI_SCHEME
                    }
                };
            }
            URI_PART | URI_HOST => self.uri_byte(b, blank, rules),
            URI_REST if b == b'>' => self.state = self.after_address(b),
            _ => {}
        }
    }

    #[inline(always)]
    fn begin_uri(&mut self) -> u32 {
        // What a bare URI before it said is void: it was a display name.
        self.addr = (self.addr & ADDR_TO) | ADDR_ANGLE;
        self.hash = FNV_BASIS;
        URI_SCHEME
    }

    /// The scheme's colon: the user or host part begins.
    #[inline(always)]
    fn begin_part(&mut self) -> u32 {
        let tel = self.hash == TEL;
        self.addr &= ADDR_TO | ADDR_ANGLE;
        if tel {
            self.addr |= ADDR_TEL;
        }
        if self.want & READ_ADDRESSES != 0 {
            self.user = u32::from(START_USER);
            self.domain = if tel { DEAD } else { START_DOMAIN }.into();
        }
        URI_PART
    }

    #[inline(always)]
    fn uri_byte(&mut self, b: u8, blank: bool, rules: &impl Rules) {
        let angle = self.addr & ADDR_ANGLE != 0;
        match b {
            b'@' if self.state == URI_PART => {
                if self.addr & USER_HIT != 0 {
                    self.denied |= DENY_USER;
                }
                self.addr &= !(ADDR_FROZEN | DOMAIN_HIT | ADDR_PARAMS);
                self.user = u32::from(DEAD);
                if self.want & READ_ADDRESSES != 0 {
                    self.domain = u32::from(START_DOMAIN);
                }
                self.state = URI_HOST;
            }
            b':' if self.addr & ADDR_V6 == 0 => self.addr |= ADDR_FROZEN,
            b';' | b'?' | b',' if angle && self.state == URI_PART => {
                // A host ends here; a user may go on to an `@`.
                self.addr |= ADDR_PARAMS;
                self.domain = u32::from(DEAD);
                self.feed_part(b, rules);
            }
            b'>' => self.end_part(b),
            b';' | b'?' | b',' if !angle => self.end_part(b),
            _ if blank && !angle => self.tentative(),
            _ if blank => {}
            _ if self.addr & ADDR_FROZEN == 0 => {
                if b == b'[' {
                    self.addr |= ADDR_V6;
                } else if b == b']' {
                    self.addr &= !ADDR_V6;
                }
                self.feed_part(b, rules);
            }
            _ => {}
        }
    }

    /// `b` to the user and domain automata still running.
    #[inline(always)]
    fn feed_part(&mut self, b: u8, rules: &impl Rules) {
        let (user, user_hit) = feed(rules, self.user, b);
        let (domain, domain_hit) = feed(rules, self.domain, b);
        self.user = user;
        self.domain = domain;
        if user_hit {
            self.addr |= USER_HIT;
        }
        if domain_hit {
            self.addr |= DOMAIN_HIT;
        }
    }

    /// A URI without `<>` ended at a blank or its line's end: the verdict
    /// waits, in case a `<` shows it was a display name.
    #[inline(always)]
    fn tentative(&mut self) {
        let verdict = self.part_verdict();
        self.addr = (self.addr & ADDR_TO) | ADDR_TENTATIVE | (verdict << PENDING);
        self.user = u32::from(DEAD);
        self.domain = u32::from(DEAD);
        self.state = ADDR_NAME;
    }

    /// A line ends inside the user-or-host part or the host.
    #[inline(always)]
    pub(super) fn uri_line_end(&mut self) {
        if self.addr & ADDR_ANGLE != 0 {
            self.end_part(b'\r');
        } else {
            self.tentative();
        }
    }

    /// What the part read so far says, as `DENY_*` bits.
    #[inline(always)]
    fn part_verdict(&self) -> u32 {
        let (hit, deny) = if self.state == URI_PART && self.addr & ADDR_TEL != 0 {
            (USER_HIT, DENY_USER)
        } else {
            (DOMAIN_HIT, DENY_DOMAIN)
        };
        if self.addr & hit != 0 {
            deny
        } else {
            0
        }
    }

    /// The user-or-host part or the host ended at `b`: what it was is
    /// judged, and the rest of the value is read for what follows.
    #[inline(always)]
    pub(super) fn end_part(&mut self, b: u8) {
        self.denied |= self.part_verdict();
        self.user = u32::from(DEAD);
        self.domain = u32::from(DEAD);
        self.state = if self.addr & ADDR_ANGLE != 0 && b != b'>' {
            URI_REST
        } else {
            self.after_address(b)
        };
    }

    /// Past the URI, at `b`: a To header is read on for its tag.
    #[inline(always)]
    fn after_address(&mut self, b: u8) -> u32 {
        if self.addr & ADDR_TO != 0 {
            self.tag_search(b)
        } else {
            SKIP
        }
    }

    /// What a request is denied for, if anything: a scanner's User-Agent
    /// first, then its method, then its From, To or Contact.
    #[inline(always)]
    pub fn denied(&self) -> Option<super::Denial> {
        use super::{Denial, Start};
        if matches!(self.start(), Start::Response | Start::Empty) {
            None
        } else if self.denied & DENY_AGENT != 0 {
            Some(Denial::Agent)
        } else if self.denied & DENY_METHOD != 0 {
            Some(Denial::Method)
        } else if self.denied & (DENY_USER | DENY_DOMAIN) != 0 {
            Some(Denial::Header)
        } else {
            None
        }
    }
}
