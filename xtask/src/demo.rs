pub const NETNS_PREFIX: &str = "lbdemo-";
pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("demo: in progress")
}
