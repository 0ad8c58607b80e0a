//! Table selection globs.

/// `*` matches any run of characters, `?` one; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match("public.*", "public.orders"));
        assert!(glob_match("*.orders", "sales.orders"));
        assert!(glob_match("public.order?", "public.orders"));
        assert!(!glob_match("public.order?", "public.order"));
        assert!(!glob_match("public.*", "sales.orders"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
    }
}
