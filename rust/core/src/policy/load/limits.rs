//! Limits: their counters (each defined once, used alike), windows and amounts.

use super::*;

impl Loader {
    // --- limits -----------------------------------------------------------------------------

    pub(super) fn limits(&mut self, node: &Node, pointer: &str) -> Vec<Limit> {
        let Some(items) = self.array(node, pointer) else {
            return Vec::new();
        };
        if items.len() > MAX_LIMITS {
            self.error(
                pointer,
                node.line,
                format!(
                    "a rule may have at most {MAX_LIMITS} limits, found {}",
                    items.len()
                ),
            );
        }
        items
            .iter()
            .enumerate()
            .filter_map(|(i, limit)| self.limit(limit, &item(pointer, i)))
            .collect()
    }

    pub(super) fn limit(&mut self, node: &Node, pointer: &str) -> Option<Limit> {
        let before = self.errors.len();
        let members = self.strict_object(node, pointer, keys::LIMIT)?;
        let counter_member = self.required(members, node, pointer, "counter");
        let window_member = self.required(members, node, pointer, "window");
        let max_member = self.required(members, node, pointer, "max");
        let field = |key: &str| members.iter().find(|m| m.key == key);

        let counter = counter_member
            .and_then(|m| self.non_empty_string(&m.value, &child(pointer, "counter")));
        let window_ms = window_member.and_then(|m| match duration_ms(&m.value) {
            Ok(ms) => Some(ms),
            Err(e) => {
                self.error(child(pointer, "window"), m.value.line, e);
                None
            }
        });
        let cost_member = field("cost");
        let max = max_member.and_then(|m| match limit_max(&m.value, cost_member.is_some()) {
            Ok(max) => Some(max),
            Err(e) => {
                self.error(child(pointer, "max"), m.value.line, e);
                None
            }
        });
        let scope = match field("scope") {
            Some(m) => self.choice(&m.value, &child(pointer, "scope"), "scope", SCOPES),
            None => Some(Scope::Global),
        };
        let cost = match cost_member {
            Some(m) => self.cost_path(&m.value, &child(pointer, "cost")).map(Some),
            None => Some(None),
        };
        if self.errors.len() > before {
            return None;
        }
        let limit = Limit {
            pointer: pointer.to_owned(),
            counter: counter?.to_owned(),
            window_ms: window_ms?,
            max: max?,
            scope: scope?,
            cost: cost?,
        };
        let counter_line = counter_member.and_then(|m| m.value.line);
        self.check_counter(&limit, counter_line).then_some(limit)
    }

    fn cost_path(&mut self, node: &Node, pointer: &str) -> Option<Path> {
        let text = self.string(node, pointer)?;
        match Path::parse(text) {
            Ok(path) if path.root == PathRoot::Args => Some(path),
            Ok(_) => {
                self.error(
                    pointer,
                    node.line,
                    format!("cost must be an argument path starting with args., found {text:?}"),
                );
                None
            }
            Err(e) => {
                self.error(pointer, node.line, e);
                None
            }
        }
    }

    /// Two uses of one counter name share one counter, so they must describe it identically.
    fn check_counter(&mut self, limit: &Limit, line: Option<u32>) -> bool {
        let (window_ms, max, scope, has_cost) = (
            limit.window_ms,
            limit.max,
            limit.scope,
            limit.cost.is_some(),
        );
        let Some(first) = self.counters.get(&limit.counter) else {
            let def = CounterDef {
                pointer: limit.pointer.clone(),
                window_ms,
                max,
                scope,
                has_cost,
            };
            self.counters.insert(limit.counter.clone(), def);
            return true;
        };
        let mut differences = Vec::new();
        if first.window_ms != window_ms {
            differences.push(format!(
                "window {window_ms} ms instead of {} ms",
                first.window_ms
            ));
        }
        if first.max != max {
            differences.push(format!("max {max} instead of {}", first.max));
        }
        if first.scope != scope {
            differences.push(format!(
                "scope {} instead of {}",
                scope.as_str(),
                first.scope.as_str()
            ));
        }
        if first.has_cost != has_cost {
            differences.push(
                if has_cost {
                    "a cost where the first has none"
                } else {
                    "no cost where the first has one"
                }
                .into(),
            );
        }
        if differences.is_empty() {
            return true;
        }
        let message = format!(
            "counter {:?} conflicts with its first definition at {}: {}",
            limit.counter,
            first.pointer,
            differences.join(", ")
        );
        self.error(child(&limit.pointer, "counter"), line, message);
        false
    }
}

// --- windows and amounts ---------------------------------------------------------------------

const WINDOW_FORMS: &str = "second, minute, hour, day, a number of seconds, \
                            or a duration such as \"90s\", \"10m\", \"1h30m\"";

/// A window or timeout in ms: a unit name, a number of seconds, or a duration string.
pub(super) fn duration_ms(node: &Node) -> Result<u64, String> {
    let ms = match &node.value {
        NodeValue::String(s) => match s.as_str() {
            "second" => 1_000,
            "minute" => 60_000,
            "hour" => 3_600_000,
            "day" => 86_400_000,
            _ => parse_duration(s)
                .ok_or_else(|| format!("invalid window {s:?}; expected {WINDOW_FORMS}"))?,
        },
        NodeValue::Number(n) => {
            let seconds = n.as_f64().unwrap_or(f64::NAN);
            if seconds.is_nan() || seconds <= 0.0 {
                return Err(format!("window must be positive, found {n}"));
            }
            let ms = seconds * 1000.0;
            if ms < 1.0 {
                return Err(format!(
                    "window must be at least 1 ms (0.001 seconds), found {n}"
                ));
            }
            if ms > MAX_WINDOW_MS as f64 {
                return Err(format!("window {n} seconds is too long"));
            }
            // Round fractional ms up, but not the float noise of exact values
            // (0.07 * 1000 = 70.00000000000001).
            let nearest = ms.round();
            (if (ms - nearest).abs() < 1e-6 {
                nearest
            } else {
                ms.ceil()
            }) as u64
        }
        _ => {
            return Err(format!(
                "expected a window ({WINDOW_FORMS}), found {}",
                node.kind()
            ))
        }
    };
    if ms == 0 {
        return Err("window must be positive, found 0".into());
    }
    if ms > MAX_WINDOW_MS {
        return Err("window is too long".into());
    }
    Ok(ms)
}

/// `<int><unit>` parts (units ms, s, m, h, d), e.g. `1h30m`; `None` when malformed.
fn parse_duration(text: &str) -> Option<u64> {
    let mut rest = text;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let amount: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            let unit = match rest.chars().next()? {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                'd' => 86_400_000,
                _ => return None,
            };
            (unit, 1)
        };
        rest = &rest[unit_len..];
        total = total.checked_add(amount.checked_mul(unit_ms)?)?;
    }
    Some(total)
}

/// `max`: positive, at most 1e9, and a whole number unless the limit counts a cost.
fn limit_max(node: &Node, has_cost: bool) -> Result<f64, String> {
    let NodeValue::Number(n) = &node.value else {
        return Err(format!("expected a number, found {}", node.kind()));
    };
    let max = n.as_f64().unwrap_or(f64::NAN);
    if max.is_nan() || max <= 0.0 {
        return Err(format!("max must be greater than 0, found {n}"));
    }
    if max > MAX_MAX {
        return Err(format!("max must be at most 1000000000, found {n}"));
    }
    if !has_cost && max.fract() != 0.0 {
        return Err(format!(
            "max must be a whole number of calls when the limit has no cost, found {n}"
        ));
    }
    Ok(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn window(v: Value) -> Result<u64, String> {
        duration_ms(&Node::from_json_value(&v))
    }

    #[test]
    fn windows() {
        assert_eq!(window(json!("second")), Ok(1_000));
        assert_eq!(window(json!("minute")), Ok(60_000));
        assert_eq!(window(json!("hour")), Ok(3_600_000));
        assert_eq!(window(json!("day")), Ok(86_400_000));
        assert_eq!(window(json!(60)), Ok(60_000));
        assert_eq!(window(json!(1.5)), Ok(1_500));
        assert_eq!(window(json!(0.07)), Ok(70));
        assert_eq!(window(json!(0.0015)), Ok(2));
        assert_eq!(window(json!(0.001)), Ok(1));
        assert_eq!(window(json!("90s")), Ok(90_000));
        assert_eq!(window(json!("10m")), Ok(600_000));
        assert_eq!(window(json!("1h30m")), Ok(5_400_000));
        assert_eq!(window(json!("500ms")), Ok(500));
        assert_eq!(window(json!("2d")), Ok(172_800_000));
        for bad in [
            json!(0),
            json!(-5),
            json!(0.0005),
            json!("0s"),
            json!(""),
            json!("60"),
            json!("s"),
            json!("1x"),
            json!("1 h"),
            json!("1.5h"),
            json!("-1s"),
            json!("minutes"),
            json!("99999999999999999999d"),
            json!(true),
            json!(null),
        ] {
            assert!(window(bad.clone()).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn maxima() {
        let max = |v: Value, cost| limit_max(&Node::from_json_value(&v), cost);
        assert_eq!(max(json!(30), false), Ok(30.0));
        assert_eq!(max(json!(30.0), false), Ok(30.0));
        assert_eq!(max(json!(2.5), true), Ok(2.5));
        assert_eq!(max(json!(1e9), false), Ok(1e9));
        assert!(max(json!(2.5), false).is_err());
        assert!(max(json!(0), false).is_err());
        assert!(max(json!(-1), true).is_err());
        assert!(max(json!(1e9 + 1.0), false).is_err());
        assert!(max(json!("10"), false).is_err());
    }
}
