import pytest

from cosim.errors import CosimError
from cosim.world.network import net_file_of, read_net

from .conftest import DATA, GRID6_CFG, GRID6_NET


def test_read_shipped_net():
    net = read_net(GRID6_NET)
    assert len(net.junction_xy) == 36  # 6 x 6 grid
    assert net.bounds == pytest.approx((0.0, 0.0, 1000.0, 1000.0))
    assert len(net.drivable_edges) == 120  # 2 x 6 x 5 x 2 directed edges
    assert net_file_of(GRID6_CFG) == GRID6_NET.resolve()


def test_network_without_drivable_edge(tmp_path):
    p = tmp_path / "empty.net.xml"
    p.write_text('<net version="1.20"><location convBoundary="0,0,10,10"/>'
                 '<edge id=":j_0" function="internal"><lane id=":j_0_0" length="3.0" shape="0,0 1,1"/></edge>'
                 '<junction id="j" type="priority" x="0" y="0"/></net>')
    with pytest.raises(CosimError, match="empty.net.xml: the network has no drivable edge"):
        read_net(p)


def test_broken_network_and_config(tmp_path):
    p = tmp_path / "bad.net.xml"
    p.write_text("<net><edge id='a'>")
    with pytest.raises(CosimError, match="bad.net.xml: broken network XML at line"):
        read_net(p)
    with pytest.raises(CosimError, match="broken.sumocfg: broken XML at line"):
        net_file_of(DATA / "broken" / "broken.sumocfg")
