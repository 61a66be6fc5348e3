//! The MOSIX node map: lines `first-node-number address count`, meaning nodes `first..first+count`
//! at consecutive IPv4 addresses starting at `address`. `#` starts a comment.
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMap {
    nodes: Vec<(u32, Ipv4Addr)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("map line {line}: {detail}")]
    Line { line: usize, detail: String },
    #[error("node {0} appears twice in the map")]
    Duplicate(u32),
    #[error("the map has no nodes")]
    Empty,
}

impl NodeMap {
    pub fn parse(text: &str) -> Result<NodeMap, MapError> {
        let mut nodes: Vec<(u32, Ipv4Addr)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |d: &str| MapError::Line { line: i + 1, detail: d.to_string() };
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 3 {
                return Err(err("expected `first-node address count`"));
            }
            let first: u32 = f[0].parse().map_err(|_| err("first node is not a number"))?;
            if first == 0 {
                return Err(err("node numbers start at 1"));
            }
            let addr: Ipv4Addr = f[1].parse().map_err(|_| err("address is not an IPv4 address"))?;
            let count: u32 = f[2].parse().map_err(|_| err("count is not a number"))?;
            if count == 0 || count > 65536 {
                return Err(err("count must be 1..=65536"));
            }
            for k in 0..count {
                let a = u32::from(addr).checked_add(k).ok_or_else(|| err("address range overflows"))?;
                let n = first.checked_add(k).ok_or_else(|| err("node number overflows"))?;
                if nodes.iter().any(|(m, _)| *m == n) {
                    return Err(MapError::Duplicate(n));
                }
                nodes.push((n, Ipv4Addr::from(a)));
            }
        }
        if nodes.is_empty() {
            return Err(MapError::Empty);
        }
        nodes.sort();
        Ok(NodeMap { nodes })
    }

    pub fn addr_of(&self, node: u32) -> Option<Ipv4Addr> {
        self.nodes.iter().find(|(n, _)| *n == node).map(|(_, a)| *a)
    }

    pub fn node_of(&self, addr: Ipv4Addr) -> Option<u32> {
        self.nodes.iter().find(|(_, a)| *a == addr).map(|(n, _)| *n)
    }

    /// Resolves a node given by number or address.
    pub fn resolve(&self, name: &str) -> Option<(u32, Ipv4Addr)> {
        if let Ok(n) = name.parse::<u32>() {
            return self.addr_of(n).map(|a| (n, a));
        }
        let a: Ipv4Addr = name.parse().ok()?;
        self.node_of(a).map(|n| (n, a))
    }

    pub fn nodes(&self) -> &[(u32, Ipv4Addr)] {
        &self.nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosix_map_expands_consecutive_addresses() {
        let m = NodeMap::parse("# cluster\n1 127.0.0.1 3\n10 10.0.0.5 2 # more\n").unwrap();
        assert_eq!(m.nodes().len(), 5);
        assert_eq!(m.addr_of(3), Some("127.0.0.3".parse().unwrap()));
        assert_eq!(m.addr_of(11), Some("10.0.0.6".parse().unwrap()));
        assert_eq!(m.resolve("127.0.0.2"), Some((2, "127.0.0.2".parse().unwrap())));
        assert_eq!(m.resolve("4"), None);
    }

    #[test]
    fn bad_maps_are_refused() {
        assert!(matches!(NodeMap::parse("1 127.0.0.1"), Err(MapError::Line { line: 1, .. })));
        assert!(matches!(NodeMap::parse("0 127.0.0.1 1"), Err(MapError::Line { .. })));
        assert_eq!(NodeMap::parse("1 127.0.0.1 2\n2 127.0.0.9 1"), Err(MapError::Duplicate(2)));
        assert_eq!(NodeMap::parse("#nothing\n"), Err(MapError::Empty));
    }
}
