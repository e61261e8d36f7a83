//! The deny lists the XDP program matches on every request from a source
//! not on the allow-list: scanner User-Agents (substrings), From/To/Contact
//! users and domains (prefixes, as Kamailio's `secfilter` reads its lists)
//! and methods (whole). All are ASCII case-insensitive.
//!
//! The controller compiles the lists with the `aho-corasick` crate and
//! copies its DFA into one table, a row of 256 next states per state; the
//! kernel walks the table one map lookup per byte of the values it reads,
//! whatever the number of patterns. Each list's automaton starts at a
//! fixed row (`START_*`), so the header scan needs nothing else to begin
//! one. Row 0 is the dead state: a list with no patterns starts there and
//! never matches.

/// Rows the kernel's table holds.
pub const RULE_STATES: u32 = 1024;

/// A state no input leaves and no match reaches.
pub const DEAD: u16 = 0;
/// User-Agent: a pattern anywhere in the value.
pub const START_AGENT: u16 = 1;
/// From/To/Contact user part: a pattern at its start.
pub const START_USER: u16 = 2;
/// From/To/Contact host: a pattern at its start.
pub const START_DOMAIN: u16 = 3;
/// The request method, fed with a space after it: a pattern is the whole
/// method.
pub const START_METHOD: u16 = 4;

/// Set on a next state that completes a pattern.
pub const HIT: u16 = 0x8000;
const STATE: u16 = !HIT;
const _: () = assert!(RULE_STATES <= STATE as u32 + 1);

/// Bits of the exchange's `want`: read a request to the end of its headers
/// for the deny lists that are on. The exchange's own bits sit below them.
pub const READ_AGENTS: u32 = 1 << 12;
pub const READ_ADDRESSES: u32 = 1 << 13;
pub const READ_METHODS: u32 = 1 << 14;

/// One state's transitions, by input byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleRow {
    pub next: [u16; 256],
}

impl Default for RuleRow {
    fn default() -> Self {
        RuleRow { next: [DEAD; 256] }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for RuleRow {}

/// The table the scan walks: the kernel's map, or a compiled table.
pub trait Rules {
    /// The state after `b` in `state`, with `HIT` if a pattern ends there.
    fn next(&self, state: u16, b: u8) -> u16;
}

/// No lists: every automaton is dead from its start.
pub struct NoRules;

impl Rules for NoRules {
    #[inline(always)]
    fn next(&self, _: u16, _: u8) -> u16 {
        DEAD
    }
}

/// One automaton's step: the next state (0 once dead) and whether a
/// pattern ended at `b`.
#[inline(always)]
pub fn feed(rules: &impl Rules, state: u32, b: u8) -> (u32, bool) {
    if state == DEAD as u32 {
        return (state, false);
    }
    let n = rules.next(state as u16, b);
    (u32::from(n & STATE), n & HIT != 0)
}

#[cfg(feature = "rules")]
pub use compile::{compile, RuleLists, RuleTable, RulesError};

#[cfg(feature = "rules")]
mod compile {
    use std::collections::{HashMap, VecDeque};

    use aho_corasick::{
        automaton::{Automaton, StateID},
        dfa::{Builder, DFA},
        Anchored, MatchKind, StartKind,
    };

    use super::*;

    /// Rows before the first state a list's automaton adds.
    const FIRST_FREE: u16 = START_METHOD + 1;

    /// What the operator configured.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct RuleLists {
        pub agents: Vec<String>,
        pub users: Vec<String>,
        pub domains: Vec<String>,
        pub methods: Vec<String>,
    }

    impl RuleLists {
        /// The lists that are on, as the header scan's `READ_*` bits (and
        /// the kernel's `CONFIG_MATCH` flags).
        pub fn reads(&self) -> u32 {
            let on = |l: &Vec<String>, bit: u32| if l.is_empty() { 0 } else { bit };
            on(&self.agents, READ_AGENTS)
                | on(&self.users, READ_ADDRESSES)
                | on(&self.domains, READ_ADDRESSES)
                | on(&self.methods, READ_METHODS)
        }

        pub fn is_empty(&self) -> bool {
            self.agents.is_empty()
                && self.users.is_empty()
                && self.domains.is_empty()
                && self.methods.is_empty()
        }
    }

    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    pub enum RulesError {
        #[error("an empty {0} entry would match every request")]
        Empty(&'static str),
        #[error("{list} entry {entry:?}: {why}")]
        Bad {
            list: &'static str,
            entry: String,
            why: &'static str,
        },
        #[error(
            "the deny lists need {0} automaton states; the kernel's table holds {RULE_STATES}: shorten them"
        )]
        TooBig(usize),
        #[error("compiling the {0} list: {1}")]
        Build(&'static str, String),
    }

    /// The kernel's table: row `i` is state `i`.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct RuleTable {
        pub rows: Vec<RuleRow>,
    }

    impl Rules for RuleTable {
        fn next(&self, state: u16, b: u8) -> u16 {
            self.rows
                .get(usize::from(state))
                .map_or(DEAD, |r| r.next[usize::from(b)])
        }
    }

    impl RuleTable {
        /// Whether `value` holds a User-Agent pattern.
        pub fn agent_matches(&self, value: &[u8]) -> bool {
            self.walk(START_AGENT, value)
        }

        /// Whether `value` starts with a user pattern.
        pub fn user_matches(&self, value: &[u8]) -> bool {
            self.walk(START_USER, value)
        }

        /// Whether `value` starts with a domain pattern.
        pub fn domain_matches(&self, value: &[u8]) -> bool {
            self.walk(START_DOMAIN, value)
        }

        /// Whether `method` is on the list.
        pub fn method_matches(&self, method: &[u8]) -> bool {
            self.walk(START_METHOD, &[method, b" "].concat())
        }

        fn walk(&self, start: u16, bytes: &[u8]) -> bool {
            let mut s = u32::from(start);
            for &b in bytes {
                let (n, hit) = feed(self, s, b);
                if hit {
                    return true;
                }
                s = n;
            }
            false
        }
    }

    /// Compiles the lists into the kernel's table.
    pub fn compile(lists: &RuleLists) -> Result<RuleTable, RulesError> {
        let mut t = Table {
            rows: vec![RuleRow::default(); usize::from(FIRST_FREE)],
        };
        t.add("user_agents", START_AGENT, &lists.agents, false, "")?;
        t.add("users", START_USER, &lists.users, true, "")?;
        t.add("domains", START_DOMAIN, &lists.domains, true, "")?;
        for m in &lists.methods {
            if !m.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(RulesError::Bad {
                    list: "methods",
                    entry: m.clone(),
                    why: "a method is one token",
                });
            }
        }
        t.add("methods", START_METHOD, &lists.methods, true, " ")?;
        if t.rows.len() > RULE_STATES as usize {
            return Err(RulesError::TooBig(t.rows.len()));
        }
        Ok(RuleTable { rows: t.rows })
    }

    struct Table {
        rows: Vec<RuleRow>,
    }

    impl Table {
        /// Copies one list's DFA into the table, its start at row `start`,
        /// breadth first from there.
        fn add(
            &mut self,
            list: &'static str,
            start: u16,
            patterns: &[String],
            anchored: bool,
            suffix: &str,
        ) -> Result<(), RulesError> {
            if patterns.is_empty() {
                return Ok(());
            }
            if patterns.iter().any(|p| p.is_empty()) {
                return Err(RulesError::Empty(list));
            }
            let patterns: Vec<String> = patterns.iter().map(|p| format!("{p}{suffix}")).collect();
            let dfa: DFA = Builder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .start_kind(if anchored {
                    StartKind::Anchored
                } else {
                    StartKind::Unanchored
                })
                .build(&patterns)
                .map_err(|e| RulesError::Build(list, e.to_string()))?;
            let mode = if anchored {
                Anchored::Yes
            } else {
                Anchored::No
            };
            let first = dfa
                .start_state(mode)
                .map_err(|e| RulesError::Build(list, e.to_string()))?;
            let mut ids: HashMap<StateID, u16> = HashMap::from([(first, start)]);
            let mut todo = VecDeque::from([first]);
            while let Some(sid) = todo.pop_front() {
                let row = usize::from(ids[&sid]);
                for b in 0..=255u8 {
                    let n = dfa.next_state(mode, sid, b);
                    if dfa.is_dead(n) {
                        continue;
                    }
                    let id = match ids.get(&n) {
                        Some(&id) => id,
                        None => {
                            // Past the table's room the error is reported
                            // once the whole size is known.
                            let id = u16::try_from(self.rows.len())
                                .ok()
                                .filter(|&id| id & HIT == 0)
                                .ok_or(RulesError::TooBig(self.rows.len()))?;
                            self.rows.push(RuleRow::default());
                            ids.insert(n, id);
                            todo.push_back(n);
                            id
                        }
                    };
                    self.rows[row].next[usize::from(b)] =
                        id | if dfa.is_match(n) { HIT } else { 0 };
                }
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn lists(agents: &[&str], users: &[&str], domains: &[&str], methods: &[&str]) -> RuleLists {
            let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
            RuleLists {
                agents: v(agents),
                users: v(users),
                domains: v(domains),
                methods: v(methods),
            }
        }

        #[test]
        fn agents_match_anywhere_users_and_domains_at_the_start_methods_whole() {
            let t = compile(&lists(
                &["friendly-scanner", "sipvicious", "vicious", "iwar"],
                &["sipvicious", "100"],
                &["evil.example"],
                &["PUBLISH", "SUBSCRIBE"],
            ))
            .unwrap();
            assert!(t.agent_matches(b"friendly-scanner"));
            assert!(t.agent_matches(b"Mozilla FRIENDLY-Scanner/1.0"));
            assert!(t.agent_matches(b"x sipvicious"));
            assert!(t.agent_matches(b"sipviciou-vicious"));
            assert!(!t.agent_matches(b"friendly scanner"));
            assert!(!t.agent_matches(b"Linphone/5.2 (belle-sip/5.2)"));
            assert!(t.user_matches(b"SIPvicious1"));
            assert!(t.user_matches(b"1001"));
            assert!(!t.user_matches(b"x100"));
            assert!(!t.user_matches(b"10"));
            assert!(t.domain_matches(b"evil.example.com"));
            assert!(!t.domain_matches(b"good.evil.example"));
            assert!(t.method_matches(b"SUBSCRIBE"));
            assert!(t.method_matches(b"publish"));
            assert!(!t.method_matches(b"SUBSCRIB"));
            assert!(!t.method_matches(b"SUBSCRIBEX"));
            assert!(!t.method_matches(b"INVITE"));
        }

        #[test]
        fn the_table_agrees_with_a_plain_search() {
            let agents = ["sip", "ipv", "vaxsipuseragent", "smap", "gulp", "a"];
            let t = compile(&lists(&agents, &[], &[], &[])).unwrap();
            let hay = [
                "",
                "s",
                "si",
                "sIp",
                "xxsmaxsmap",
                "gul",
                "gulP",
                "vaxsipuseragen",
                "bcd",
                "zzzIPVzz",
                "bbbbba",
            ];
            for h in hay {
                let want = agents
                    .iter()
                    .any(|a| h.to_ascii_lowercase().contains(&a.to_ascii_lowercase()));
                assert_eq!(t.agent_matches(h.as_bytes()), want, "{h}");
            }
        }

        #[test]
        fn empty_lists_match_nothing_and_bad_entries_are_refused() {
            let t = compile(&RuleLists::default()).unwrap();
            assert_eq!(t.rows.len(), usize::from(FIRST_FREE));
            assert!(!t.agent_matches(b"friendly-scanner"));
            assert!(!t.method_matches(b"INVITE"));
            assert_eq!(
                compile(&lists(&[], &[""], &[], &[])),
                Err(RulesError::Empty("users"))
            );
            assert!(matches!(
                compile(&lists(&[], &[], &[], &["SUB SCRIBE"])),
                Err(RulesError::Bad { .. })
            ));
            let many: Vec<String> = (0..200)
                .map(|i| {
                    format!(
                        "{:016x}-tool",
                        (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    )
                })
                .collect();
            let refs: Vec<&str> = many.iter().map(String::as_str).collect();
            assert!(matches!(
                compile(&lists(&refs, &[], &[], &[])),
                Err(RulesError::TooBig(_))
            ));
        }
    }
}
